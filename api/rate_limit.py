"""Every authenticated request takes one token of its client's bucket, whatever it asks and
whether or not it is valid: a client cannot make the API work for free, with reads, refunds,
operator routes or invalid requests.

``RequestBudget`` is a pure ASGI middleware inside the authentication middleware (api.auth: the
client is known, 401 and 431 are answered) and outside everything else, so the token is taken
before any route, validation or body read. Over the budget: 429 ``rate_limited`` with
``Retry-After``, ``RateLimit-Policy`` and ``RateLimit``; within it, every answer carries the
two RateLimit fields. Not here: the routes without a client key (api.auth.OPEN_PATHS) and
``POST /payments``, whose valid requests take their token inside the accept script (one Redis
round trip for both) and invalid ones through :func:`take_token` (api.payments), and
``POST /payments/batch``, whose items take one token each the same way (api.batch_routes).

The bucket lives in Redis (``take_token.lua``). When Redis does not answer, the request goes on
untaxed: the route then answers what it can (``/metrics`` its ``payments_redis_up 0``, the
others their 503), rather than the limiter turning an outage into one more failure.
"""

from __future__ import annotations

from re import Pattern

import structlog
from fastapi.routing import iter_route_contexts
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import OPEN_PATHS
from api.error_responses import response_for
from api.service import PaymentService
from shared.errors import RateLimited
from shared.settings.api_clients import Client

log = structlog.get_logger(__name__)

# Their valid requests take their tokens in the accept script, one a payment (api.payments,
# api.batch_routes), and their refused ones through take_token.
ACCEPTS = frozenset({("POST", "/payments"), ("POST", "/payments/batch")})


async def take_token(service: PaymentService, principal: Client | None) -> dict[str, str]:
    """One token of the client's bucket: its RateLimit headers ({} when its rate is
    unlimited or Redis did not answer), or RateLimited (429)."""
    try:
        return await service.take_token(principal)
    except RedisError as exc:
        log.warning("rate_limit.unchecked", error=exc.__class__.__name__)
        return {}


class RequestBudget:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: list[tuple[Pattern[str], frozenset[str], BaseRoute]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in OPEN_PATHS
            or (scope["method"], scope["path"]) in ACCEPTS
        ):
            await self.app(scope, receive, send)
            return
        app = scope["app"]
        try:
            headers = await take_token(app.state.service, scope["state"].get("principal"))
        except RateLimited as exc:
            # The route the router would match, as the router would put it in the scope, so
            # that the per-route answer counter (api.auth) counts the refusal under its route.
            if self._routes is None:
                self._routes = _routes(app)
            method, path = scope["method"], scope["path"]
            scope["route"] = next(
                (r for p, m, r in self._routes if method in m and p.match(path)), None
            )
            request = Request(scope, receive)
            await response_for(request, exc)(scope, receive, send)
            return
        if not headers:
            await self.app(scope, receive, send)
            return
        raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

        async def send_with_budget(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *raw]
            await send(message)

        await self.app(scope, receive, send_with_budget)


def _routes(app: Starlette) -> list[tuple[Pattern[str], frozenset[str], BaseRoute]]:
    """Each route of the app with its path pattern and methods, in the router's order."""
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        pattern = getattr(route, "path_regex", None)
        if pattern is not None:
            found.append((pattern, frozenset(getattr(route, "methods", None) or ()), route))
    return found
