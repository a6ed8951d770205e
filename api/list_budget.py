"""The API's reads of Stripe (``GET /v1/charges``), each booked on the fleet's Stripe budget.

A list is read while its client waits, and holds one of the process's few list slots
(``api.list_limit``) meanwhile, so it waits for its endpoint's slot (and the account's) only a
little: if the budget is booked further ahead than ``MAX_WAIT_SECONDS`` (charges and other
lists of the fleet are using it), nothing is booked and the answer is 503 ``list_busy`` with
``Retry-After``, as when the list slots are full. The wait is ``asyncio.sleep``: the event loop
serves accepts meanwhile. A 429 from Stripe cuts the endpoint's rate for the whole fleet, as a
worker's does (``shared.stripe.budget``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from api.list_limit import ListBusy
from shared.errors import RateLimited
from shared.store.stripe_budget_store import AsyncStripeBudgetStore
from shared.stripe.budget import endpoint_of
from shared.stripe.gateway import StripeGateway
from shared.stripe.limits import GLOBAL, RateLimits
from shared.stripe.objects import ChargePage

T = TypeVar("T")

# The longest a list waits for its slot of the Stripe budget before answering 503.
MAX_WAIT_SECONDS = 0.5


class BudgetedCharges:
    """``list_charges`` (a ``ChargeLister``) within the Stripe budget."""

    def __init__(
        self, gateway: StripeGateway, store: AsyncStripeBudgetStore, limits: RateLimits
    ) -> None:
        self._gateway = gateway
        self._store = store
        self._limits = limits
        self._table = {GLOBAL: limits.global_rps, **limits.endpoints}

    async def list_charges(
        self, *, customer: str, limit: int, starting_after: str | None
    ) -> ChargePage:
        return await self.call("charges.list", self._gateway.list_charges, customer=customer,
                               limit=limit, starting_after=starting_after)  # fmt: skip

    async def call(self, name: str, request: Callable[..., Awaitable[T]], /, **params: Any) -> T:
        """``request(**params)`` in a slot of the budget booked for it, if one comes soon."""
        endpoint = endpoint_of(name)
        if self._limits.enabled:
            booking = await self._store.book([endpoint], self._table, max_wait=MAX_WAIT_SECONDS)
            if booking.refused:
                raise ListBusy(
                    max(1, math.ceil(booking.waits[0])),
                    "Stripe's rate limit for reading charges is in use by the whole service "
                    "right now; retry shortly.",
                )
            if booking.waits[0] > 0:
                await asyncio.sleep(booking.waits[0])
        try:
            return await request(**params)
        except RateLimited:
            if self._limits.enabled:
                await self._store.throttled(endpoint, self._table[endpoint])
            raise
