"""``POST /payments`` and ``POST /payments/batch`` served ahead of FastAPI's router: the
busiest routes, with fewer layers.

FastAPI's exception middleware, router (matching the path against every route), dependency
solving and endpoint wrapper cost the accept path about as much CPU as the accept's own work
(profile in docs/PERFORMANCE.md), and a batch a share of each of its items'. This pure ASGI
middleware sits inside the authentication middleware (api.auth: request id, client, 431/401
already done) and answers exactly these two with the very functions the FastAPI routes call
(``api.payments.accept_payment``, ``api.batch_routes.create_payment_batch``) and the app's own
error handler (``api.error_responses.response_for``); every other request goes on to FastAPI
unchanged. The routes stay declared on the router, so the OpenAPI description, Swagger UI and
an app built without this middleware behave the same.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.batch_routes import PATH as BATCH_PATH
from api.batch_routes import create_payment_batch
from api.error_responses import response_for
from api.payments import accept_payment

PATH = "/payments"

Endpoint = Callable[[Request], Awaitable[Response]]


class AcceptFastPath:
    def __init__(
        self, app: ASGIApp, route: object | None = None, batch_route: object | None = None
    ) -> None:
        self.app = app
        # Each path's function, and the router's route for it: put in the scope as the router
        # would, so that what reads the matched route (the per-route request counter in
        # api.auth) sees it.
        self._served: dict[str, tuple[Endpoint, object | None]] = {
            PATH: (accept_payment, route),
            BATCH_PATH: (create_payment_batch, batch_route),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        served = self._served.get(scope["path"]) if scope["type"] == "http" else None
        if served is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        endpoint, route = served
        if route is not None:
            scope["route"] = route
        request = Request(scope, receive)
        response: Response
        try:
            response = await endpoint(request)
        except ClientDisconnect:
            raise  # no answer for a client gone (api.auth)
        except Exception as exc:
            response = response_for(request, exc)
        await response(scope, receive, send)
