"""Request dependencies, as ``Annotated`` aliases the routes declare.

Each hands a route one of the objects the app's lifespan built (api.main); nothing is made on
first use. They are ``async def``: FastAPI runs a plain ``def`` dependency in a thread pool,
which on the accept path cost more than the whole Redis round trip.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from redis.asyncio import Redis

from api.list_budget import BudgetedCharges
from api.list_limit import ListLimiter
from api.refund_service import RefundService
from api.service import PaymentService
from shared.settings.service_settings import Settings
from shared.store import PaymentStore
from shared.store.lifecycle_store import AsyncLifecycleStore
from shared.store.refund_store import AsyncRefundStore
from shared.stripe.gateway import StripeGateway

T = TypeVar("T")


def _built(name: str, kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A dependency handing a route ``app.state.<name>``, a ``kind`` the lifespan built."""

    async def dependency(request: Request) -> T:
        built: T = getattr(request.app.state, name)
        return built

    dependency.__name__ = f"_{name}"
    return dependency


async def _charges(request: Request) -> BudgetedCharges:
    state = request.app.state
    return BudgetedCharges(state.gateway, state.stripe_budget, state.settings.stripe_limits)


SettingsDep = Annotated[Settings, Depends(_built("settings", Settings))]
RedisDep = Annotated[Redis, Depends(_built("redis", Redis))]
ServiceDep = Annotated[PaymentService, Depends(_built("service", PaymentService))]
RefundServiceDep = Annotated[RefundService, Depends(_built("refunds", RefundService))]
GatewayDep = Annotated[StripeGateway, Depends(_built("gateway", StripeGateway))]
# The customers' charges read from Stripe within the fleet's Stripe budget.
ChargesDep = Annotated[BudgetedCharges, Depends(_charges)]
RefundStoreDep = Annotated[AsyncRefundStore, Depends(_built("refund_store", AsyncRefundStore))]
LifecycleStoreDep = Annotated[
    AsyncLifecycleStore, Depends(_built("lifecycle_store", AsyncLifecycleStore))
]
# A blocking store, for the admin routes' rare calls run in a thread off the event loop.
AdminStoreDep = Annotated[PaymentStore, Depends(_built("admin_store", PaymentStore))]
ListLimiterDep = Annotated[ListLimiter, Depends(_built("list_limiter", ListLimiter))]
