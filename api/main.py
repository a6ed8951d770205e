"""The HTTP API: ``uvicorn api.main:app --host 0.0.0.0 --port 8080``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from redis.asyncio import Redis

from api import (
    admin,
    batch_routes,
    cancel_routes,
    capture_routes,
    client_routes,
    error_responses,
    health,
    metrics,
    openapi,
    operation_docs,
    payment_list,
    payments,
    refund_routes,
    webhooks,
)
from api.accept_asgi import AcceptFastPath
from api.auth import RequestContextMiddleware
from api.capture_service import CaptureService
from api.group_commit import GroupedScriptsClient
from api.list_limit import ListLimiter, client_cap
from api.rate_limit import RequestBudget
from api.refund_service import RefundService
from api.service import PaymentService
from api.start_rules import refuse_unsafe_start
from api.waiter import PaymentWaiter
from shared.callbacks.signing import CallbackSecrets
from shared.fleet_metrics import ApiMetrics
from shared.log_config import configure_logging
from shared.process import freeze_startup_objects
from shared.redis_clients import async_redis, sync_redis
from shared.settings.api_clients import load as load_clients
from shared.settings.service_settings import Settings, get_settings
from shared.store import PaymentStore
from shared.store.capture_store import AsyncCaptureStore
from shared.store.lifecycle_store import AsyncLifecycleStore
from shared.store.list_store import AsyncListStore
from shared.store.refund_store import AsyncRefundStore
from shared.store.stripe_budget_store import AsyncStripeBudgetStore
from shared.stripe.gateway import StripeGateway


def create_app(
    settings: Settings | None = None, *, redis: Redis | None = None, fast_accept: bool = True
) -> FastAPI:
    """``fast_accept=False`` leaves POST /payments and POST /payments/batch to FastAPI's
    router (api.accept_asgi): the tests compare the two."""
    settings = settings or get_settings()
    configure_logging(settings)
    clients = load_clients(settings)
    refuse_unsafe_start(settings, clients)
    callback_secrets = CallbackSecrets(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = redis or async_redis(settings)
        events = redis or async_redis(settings, for_pubsub=True)
        app.state.settings = settings
        app.state.callback_secrets = callback_secrets
        app.state.metrics = ApiMetrics()
        app.state.redis = client
        # The accept scripts of one event-loop tick share one Redis round trip
        # (api/group_commit.py); ACCEPT_GROUP_COMMIT=false turns it off.
        scripts: Redis = client
        if settings.accept_group_commit:
            scripts = cast(Redis, GroupedScriptsClient(client))
        app.state.service = PaymentService(scripts, settings, clients=len(clients.clients))
        gateway = app.state.gateway = StripeGateway(settings)
        # The reads of Stripe's charges book the fleet's Stripe budget (api.list_budget).
        app.state.stripe_budget = AsyncStripeBudgetStore(client)
        app.state.refund_store = AsyncRefundStore(client, settings)
        app.state.refunds = RefundService(app.state.refund_store, settings, app.state.service)
        app.state.captures = CaptureService(
            AsyncCaptureStore(client, settings), settings, app.state.service
        )
        app.state.lifecycle_store = AsyncLifecycleStore(client, settings)
        app.state.list_store = AsyncListStore(client, settings)
        # The admin routes' rare calls block: their store runs in a thread off the event loop.
        admin_redis = sync_redis(settings)
        app.state.admin_store = PaymentStore(admin_redis, settings)
        app.state.list_limiter = ListLimiter(
            settings.list_max_concurrency,
            settings.list_retry_after_seconds,
            client_cap=client_cap(
                settings.list_max_concurrency, settings.list_client_share, len(clients.clients)
            ),
        )
        app.state.waiter = PaymentWaiter(events)
        app.state.waiter.start()
        freeze_startup_objects()
        try:
            yield
        finally:
            await app.state.waiter.stop()
            await gateway.aclose()
            admin_redis.close()
            if redis is None:
                await client.aclose()
                await events.aclose()

    app = FastAPI(
        title="Payments",
        version="0.1.0",
        summary="Queue-backed asynchronous payments: accept fast, charge Stripe in workers.",
        lifespan=lifespan,
        # A path with a trailing slash is no route (404 error object), not a redirect that a
        # client's POST would follow without its body, and that no operation documents.
        redirect_slashes=False,
    )
    error_responses.install(app)
    app.include_router(health.router)
    # The batch's path first: /payments/batch is no payment id (batch_routes).
    app.include_router(batch_routes.router, tags=["payments"])
    app.include_router(payments.router, tags=["payments"])
    # Innermost first: the fast path for POST /payments (and the batch) runs after
    # authentication and the request budget (which leaves those routes' tokens to the accept
    # script).
    if fast_accept:
        app.add_middleware(
            AcceptFastPath,
            route=_route(payments.router, "/payments", "POST"),
            batch_route=_route(batch_routes.router, batch_routes.PATH, "POST"),
        )
    app.add_middleware(RequestBudget)
    app.add_middleware(RequestContextMiddleware, settings=settings, registry=clients)
    app.include_router(metrics.router)
    app.include_router(admin.router)
    app.include_router(client_routes.router)
    app.include_router(webhooks.router, tags=["webhooks"])
    app.include_router(refund_routes.router, tags=["refunds"])
    app.include_router(cancel_routes.router, tags=["payments"])
    app.include_router(capture_routes.router, tags=["payments"])
    app.include_router(payment_list.router, tags=["payments"])
    app.webhooks.include_router(operation_docs.callbacks)
    openapi.install(app, settings)
    return app


def _route(router: APIRouter, path: str, method: str) -> APIRoute:
    """The route as the router puts it in the scope of a request it matched."""
    for route in router.routes:
        if isinstance(route, APIRoute) and route.path == path and method in (route.methods or ()):
            return route
    raise LookupError(f"no route for {method} {path}")


app = create_app()
