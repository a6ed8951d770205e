"""The Stripe request budget shared by every worker process and the API: Stripe's rate limits,
the account's and each endpoint's, kept by the whole fleet together (GCRA in Redis, no burst).

Celery's own ``rate_limit`` is per worker, so N workers would make N times the calls; Stripe's
limits are per account, and per endpoint within it (``shared.stripe.limits``). Each attempt
books the calls it will make in one Redis step (``StripeBudgetStore.book``): every call a slot
of its endpoint's limit and one of the account's. It then waits for its slots: callers are
served in the order they booked, nobody polls, and a wait is never a failure, however long the
backlog. A 429 from Stripe cuts that limit's rate for the whole fleet at once, and the rate
grows back slowly (``StripeBudgetStore.throttled``: multiplicative decrease, additive
increase), so a limit set above Stripe's costs a few 429s, not a storm.
No well-kept library fits: limits/redis-rate-limiters refuse rather than schedule.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shared.store.stripe_budget_store import Booking
from shared.stripe.limits import ENDPOINTS, GLOBAL, RateLimits
from shared.stripe.outcomes import TransientStripeError


class Booker(Protocol):
    def book(
        self, calls: Sequence[str], limits: Mapping[str, float], *, max_wait: float | None = None
    ) -> Booking: ...

    def throttled(self, name: str, limit: float) -> float: ...


class _Off:
    def book(
        self, calls: Sequence[str], limits: Mapping[str, float], *, max_wait: float | None = None
    ) -> Booking:
        return Booking(tuple(0.0 for _ in calls))

    def throttled(self, name: str, limit: float) -> float:
        return limit


def endpoint_of(call: str) -> str:
    """The endpoint a call (its metric label, ``payment_intents.create``) counts against."""
    return ENDPOINTS[call]


@dataclass(slots=True)
class Slots:
    """Booked calls: when each may go (monotonic seconds), by endpoint, in booking order."""

    at: dict[str, list[float]] = field(default_factory=dict)

    def take(self, endpoint: str) -> float | None:
        """When the next call booked for ``endpoint`` may go, or None if none is left."""
        times = self.at.get(endpoint)
        return times.pop(0) if times else None


class StripeBudget:
    def __init__(self, booker: Booker, limits: RateLimits | None) -> None:
        self._booker = booker
        self.limits = limits
        self.enabled = limits is not None and limits.enabled
        self._table: dict[str, float] = (
            {GLOBAL: limits.global_rps, **limits.endpoints} if limits is not None else {}
        )
        self._lock = threading.Lock()
        self._booked_until = 0.0  # monotonic: the last slot this process booked

    @classmethod
    def off(cls) -> StripeBudget:
        """A budget that books nothing (no shared limit given)."""
        return cls(_Off(), None)

    def book(self, calls: Sequence[str]) -> Slots:
        """Book ``calls`` (metric labels, in the order they will be made): one Redis round
        trip, none when the budget is off."""
        now = time.monotonic()
        endpoints = [endpoint_of(call) for call in calls]
        slots = Slots()
        if not self.enabled or not endpoints:
            for endpoint in endpoints:
                slots.at.setdefault(endpoint, []).append(now)
            return slots
        booking = self._booker.book(endpoints, self._table)
        for endpoint, wait in zip(endpoints, booking.waits, strict=True):
            slots.at.setdefault(endpoint, []).append(now + wait)
        with self._lock:
            self._booked_until = max(self._booked_until, now + max(booking.waits))
        return slots

    def booked_ahead(self) -> float:
        """How far ahead the budget is booked, as this process last learned it: seconds until
        the last slot it booked (0 when none is ahead)."""
        return max(0.0, self._booked_until - time.monotonic())

    def throttled(self, call: str, error: TransientStripeError) -> None:
        """Stripe answered 429 to ``call``: cut the rate of the limit it passed (the account's
        when Stripe says so, else the endpoint's) for the whole fleet."""
        if not self.enabled:
            return
        name = GLOBAL if error.limited_globally else endpoint_of(call)
        self._booker.throttled(name, self._table[name])
