"""``POST /payments`` served ahead of FastAPI's router: the busiest route, with fewer layers.

FastAPI's exception middleware, router (matching the path against every route), dependency
solving and endpoint wrapper cost the accept path about as much CPU as the accept's own work
(profile in docs/PERFORMANCE.md). This pure ASGI middleware sits inside the authentication
middleware (api.auth: request id, client, 431/401 already done) and answers exactly
``POST /payments`` with the very function the FastAPI route calls
(``api.payments.accept_payment``) and the app's own error handler
(``api.error_responses.response_for``); every other request goes on to FastAPI unchanged. The
route stays declared on the router, so the OpenAPI description, Swagger UI and an app built
without this middleware behave the same.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.error_responses import response_for
from api.payments import accept_payment

PATH = "/payments"


class AcceptFastPath:
    def __init__(self, app: ASGIApp, route: object | None = None) -> None:
        self.app = app
        # The router's route for POST /payments: put in the scope as the router would, so that
        # what reads the matched route (the per-route request counter in api.auth) sees it.
        self._route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        if self._route is not None:
            scope["route"] = self._route
        request = Request(scope, receive)
        response: Response
        try:
            response = await accept_payment(request)
        except Exception as exc:
            response = response_for(request, exc)
        await response(scope, receive, send)
