"""Errors as answers: ``{"error": {...}}`` with a telling status.

Every error raised while a route runs (and FastAPI's own 404/405/validation errors) is rendered
here. Two answers are rendered elsewhere, in the same shape: the authentication middleware's
401 and 431, refused before any route runs (api.auth), and a payment that failed in a worker,
answered from its stored error (api.payments.payment_answer).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import compile_path

from shared.errors import (
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PaymentServiceError,
    StoreUnavailable,
)
from shared.payments.metadata import MAX_DESCRIPTION_LENGTH, MAX_KEYS

log = structlog.get_logger(__name__)

JSON = "application/json"

# What a pattern or type failure means for each field, in words a client can act on.
FIELD_HINTS = {
    "account_id": "account_id must be a Stripe customer id: cus_ followed by 1-64 letters or "
    "digits",
    "amount": 'amount must be a decimal string in major units such as "42.99"',
    "currency": 'currency must be a supported ISO 4217 code in lower case, such as "usd"',
    "payment_method": "payment_method must be a Stripe payment method id such as pm_...",
    "customer_id": "customer_id must be a Stripe customer id: cus_ followed by 1-64 letters or "
    "digits",
    "limit": "limit must be a whole number from 1 to 100",
    "callback_url": "callback_url must be an https URL of at most 2048 characters",
    "description": f"description must be a string of at most {MAX_DESCRIPTION_LENGTH} characters",
    "metadata": f"metadata must be a JSON object of at most {MAX_KEYS} keys with string values",
    "starting_after": "starting_after must be the id of a previous page's last item (its "
    "next_cursor)",
    "customer": "customer must be a Stripe customer id: cus_ followed by 1-64 letters or digits",
    "capture_method": 'capture_method must be "automatic" or "manual"',
    "expires_at": 'expires_at must be an RFC 3339 date-time string such as "2026-01-01T12:00:00Z"',
    "expires_in": "expires_in must be a whole number of seconds",
}

# Every 503 says when to come back; these are the defaults when the error does not say.
STORE_RETRY_AFTER = "1"  # Redis did not answer: the next request may find it back
RETRY_AFTER = "5"


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def with_retry_after(status: int, headers: dict[str, str] | None) -> dict[str, str] | None:
    """``headers``, with a Retry-After when ``status`` is 503 and they carry none."""
    if status != 503 or any(name.lower() == "retry-after" for name in headers or {}):
        return headers
    return {**(headers or {}), "Retry-After": RETRY_AFTER}


def error_response(error: PaymentServiceError, headers: dict[str, str] | None = None) -> Response:
    status = error.status_code
    return json_response(
        status, {"error": error.to_dict()}, with_retry_after(status, headers or error.headers)
    )


def validation_error(errors: Sequence[Any]) -> InvalidRequest:
    """The first problem of a pydantic/FastAPI validation, as one clear 400."""
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = loc[0] if loc else None
    kind = first.get("type", "")
    if kind == "extra_forbidden" and param:
        return InvalidRequest(
            f"Received unknown parameter: {param}", code="parameter_unknown", param=param
        )
    if kind == "missing" and param:
        return InvalidRequest(
            f"Missing required parameter: {param}", code="parameter_missing", param=param
        )
    if kind in ("json_invalid", "json_type"):
        return InvalidRequest("The request body is not valid JSON.", code="invalid_json")
    if kind == "model_type" or (kind.endswith("_type") and param is None):
        return InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    if kind == "recursion_loop":
        return InvalidRequest("The request body is nested too deeply.", code="invalid_json")
    if param in FIELD_HINTS:
        message = FIELD_HINTS[param]
        if kind == "string_type":
            message = f"{param} must be a JSON string; " + message.split(" must be ", 1)[1]
        return InvalidRequest(message, code=f"{param}_invalid", param=param)
    return InvalidRequest(str(first.get("msg", "The request is invalid.")), param=param)


def redis_error_response(exc: RedisError, path: str) -> Response:
    log.warning("redis.unavailable", error=exc.__class__.__name__, path=path)
    return error_response(StoreUnavailable(), headers={"Retry-After": STORE_RETRY_AFTER})


def unexpected_error_response(exc: Exception, path: str) -> Response:
    log.exception("request.failed", path=path, exc_info=exc)
    return error_response(InternalError())


def response_for(request: Request, exc: Exception) -> Response:
    """The answer to an error raised while serving ``request``: the app's handler for every
    error, and what the accept fast path (api.accept_asgi) answers with."""
    if isinstance(exc, PaymentServiceError):
        return error_response(exc)
    if isinstance(exc, RequestValidationError):
        return error_response(validation_error(exc.errors()))
    if isinstance(exc, StarletteHTTPException):
        error: PaymentServiceError
        if exc.status_code == 404:
            error = NotFound(f"No route for {request.method} {request.url.path}")
        elif exc.status_code == 405:
            error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
            allowed = _allowed_methods(request)
            if allowed:
                return error_response(error, headers={"Allow": ", ".join(allowed)})
        else:
            error = InvalidRequest(
                str(exc.detail), code=f"http_{exc.status_code}", status=exc.status_code
            )
        return error_response(error, headers=dict(exc.headers or {}))
    if isinstance(exc, RedisError):
        return redis_error_response(exc, request.url.path)
    return unexpected_error_response(exc, request.url.path)


@functools.cache
def _path_regex(path: str) -> re.Pattern[str]:
    """A route's path as Starlette matches it, compiled once."""
    return compile_path(path)[0]


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at the request's path (Starlette's own 405 names only
    the first such route's: PUT /payments said POST, though GET /payments is a route too).
    None to add when a route took the request itself and answered 405 with its own Allow
    (batch_routes.batch_other_methods)."""
    methods: set[str] = set()
    path = request.scope["path"]
    for route in iter_route_contexts(request.app.router.routes):
        if route.path is None or not _path_regex(route.path).match(path):
            continue
        if request.method in (route.methods or ()):
            return []
        methods.update(route.methods or ())
    return sorted(methods)


async def _handle(request: Request, exc: Exception) -> Response:
    return response_for(request, exc)


def install(app: FastAPI) -> None:
    """Every error through :func:`response_for`. Starlette picks a handler by the error's
    class, so each kind it would otherwise answer itself is named; ``Exception`` covers the
    rest (a 500)."""
    for kind in (
        PaymentServiceError,
        RequestValidationError,
        StarletteHTTPException,
        RedisError,
        Exception,
    ):
        app.add_exception_handler(kind, _handle)
