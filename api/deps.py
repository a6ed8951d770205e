"""Request dependencies, as ``Annotated`` aliases the routes declare.

Each hands a route one of the objects the app's lifespan built (api.main); nothing is made on
first use. They are ``async def``: FastAPI runs a plain ``def`` dependency in a thread pool,
which on the accept path cost more than the whole Redis round trip.
"""

from __future__ import annotations

from typing import Annotated

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


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _redis(request: Request) -> Redis:
    redis: Redis = request.app.state.redis
    return redis


async def _service(request: Request) -> PaymentService:
    service: PaymentService = request.app.state.service
    return service


async def _refunds(request: Request) -> RefundService:
    refunds: RefundService = request.app.state.refunds
    return refunds


async def _gateway(request: Request) -> StripeGateway:
    gateway: StripeGateway = request.app.state.gateway
    return gateway


async def _charges(request: Request) -> BudgetedCharges:
    state = request.app.state
    return BudgetedCharges(state.gateway, state.stripe_budget, state.settings.stripe_limits)


async def _refund_store(request: Request) -> AsyncRefundStore:
    store: AsyncRefundStore = request.app.state.refund_store
    return store


async def _lifecycle_store(request: Request) -> AsyncLifecycleStore:
    store: AsyncLifecycleStore = request.app.state.lifecycle_store
    return store


async def _admin_store(request: Request) -> PaymentStore:
    store: PaymentStore = request.app.state.admin_store
    return store


async def _list_limiter(request: Request) -> ListLimiter:
    limiter: ListLimiter = request.app.state.list_limiter
    return limiter


SettingsDep = Annotated[Settings, Depends(_settings)]
RedisDep = Annotated[Redis, Depends(_redis)]
ServiceDep = Annotated[PaymentService, Depends(_service)]
RefundServiceDep = Annotated[RefundService, Depends(_refunds)]
GatewayDep = Annotated[StripeGateway, Depends(_gateway)]
# The customers' charges read from Stripe within the fleet's Stripe budget.
ChargesDep = Annotated[BudgetedCharges, Depends(_charges)]
RefundStoreDep = Annotated[AsyncRefundStore, Depends(_refund_store)]
LifecycleStoreDep = Annotated[AsyncLifecycleStore, Depends(_lifecycle_store)]
# A blocking store, for the admin routes' rare calls run in a thread off the event loop.
AdminStoreDep = Annotated[PaymentStore, Depends(_admin_store)]
ListLimiterDep = Annotated[ListLimiter, Depends(_list_limiter)]
