"""What a client's scopes let it do (``scopes`` in API_CLIENTS, shared/settings/api_clients.py).

``payments``: create, read and refund payments, list customers' charges; ``metrics``: read
``/metrics`` (every client's name and volume); ``customers:all``: list any customer's charges;
``admin``: all of these, and the dead letters. A client without the scope a route needs gets
403 ``insufficient_scope``, after authentication (401) and before the route reads its request.

Routes on FastAPI's router declare ``Depends(require(...))``; ``POST /payments`` is also served
ahead of the router (api.accept_asgi), so ``accept_payment`` calls :func:`check` itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import HTTPConnection

from api.auth import bearer_key
from api.operation_docs import guarded_responses
from shared.errors import InsufficientScope
from shared.settings.api_clients import ANONYMOUS, Client


def check(connection: HTTPConnection, *scopes: str) -> Client:
    """The request's client, if it holds one of ``scopes`` (or ``admin``); else
    InsufficientScope. Cheap enough for the accept path: a set lookup or two."""
    principal: Client = getattr(connection.state, "principal", ANONYMOUS)
    for scope in scopes:
        if principal.may(scope):
            return principal
    raise refused(*scopes)


def refused(*scopes: str) -> InsufficientScope:
    needed = " or ".join(f"`{scope}`" for scope in (*scopes, "admin"))
    return InsufficientScope(f"This request needs the {needed} scope; this client has none.")


def require(*scopes: str) -> Callable[[HTTPConnection], Awaitable[None]]:
    """A route (or router) dependency: :func:`check` for ``scopes``."""

    async def dependency(connection: HTTPConnection) -> None:
        check(connection, *scopes)

    return dependency


def guarded_router(scope: str, **options: Any) -> APIRouter:
    """A router whose every route needs a client key (401) holding ``scope`` (403), with both
    answers and the rate limit's 429 declared for each route."""
    return APIRouter(
        dependencies=[Depends(bearer_key), Depends(require(scope))],
        responses=guarded_responses(refused(scope)),
        **options,
    )
