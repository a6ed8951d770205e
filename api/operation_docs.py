"""What the routes declare to the OpenAPI document (``/openapi.json``, shown at ``/docs``) beyond
their models, for their decorators' ``responses=`` and ``openapi_extra=``: the errors a route
answers, with the service's own error bodies as examples; the headers the answers carry; the
parameters and bodies the hot routes read by hand (no FastAPI parameter solving there); and the
events the service POSTs to a client's callback endpoint (``callbacks``, for ``app.webhooks``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Header
from pydantic import BaseModel
from starlette.responses import Response

from api.schemas import CallbackEvent, ErrorResponse
from shared.errors import (
    AuthenticationFailed,
    CardDeclined,
    CustomerNotFound,
    CustomerNotOwned,
    PayloadTooLarge,
    PaymentCanceled,
    PaymentExpired,
    PaymentMethodMissing,
    PaymentServiceError,
    RateLimited,
    ServiceUnavailable,
    StoreUnavailable,
    StripeUnavailable,
    UnsupportedMediaType,
    UpstreamError,
)

JSON = "application/json"
Responses = dict[int | str, dict[str, Any]]


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


RETRY_AFTER = _header(
    "Seconds to wait before trying again.", {"type": "string", "pattern": "^[0-9]+$"}
)
# The IETF draft's fields for the client's token bucket (api.service), sent unless the client's
# rate is unlimited (CLIENT_MAX_RPS, or its own max_rps in API_CLIENTS, is 0).
RATE_LIMIT = {
    "RateLimit": _header(
        'What is left of the client\'s request budget: `"client";r=<left>;t=<seconds until '
        "one more>`.",
    ),
    "RateLimit-Policy": _header(
        'The client\'s budget: `"client";q=<burst>;w=<seconds to fill again>`.'
    ),
}
# What an answer about a payment or refund just asked for carries.
IDEMPOTENT_ANSWER = {
    "Location": _header("Its URL, to poll."),
    "Idempotency-Key": _header("The request's key: yours, or the one the server made."),
    "Idempotent-Replayed": _header(
        "`true` when this answers an earlier request with the same key.",
        {"type": "string", "enum": ["true"]},
    ),
}
DESCRIPTIONS = {
    401: "Missing, unknown or expired API key",
    403: "Not allowed for this client (the code says why)",
    429: "Too many requests: retry after Retry-After seconds",
    503: "Unavailable for now: retry after Retry-After seconds",
}


def error_responses(
    *errors: PaymentServiceError | type[PaymentServiceError],
) -> Responses:
    """The ``responses=`` entries for the errors a route can answer: each one's status, the
    error object (``ErrorResponse``), and its body as a named example. 429 and 503 say when to
    come back (Retry-After), and a 429 what is left of the budget."""
    responses: Responses = {}
    for error in errors:
        instance = error() if isinstance(error, type) else error
        status = instance.status_code
        entry = responses.setdefault(status, {"model": ErrorResponse})
        if status in DESCRIPTIONS:
            entry["description"] = DESCRIPTIONS[status]
        if status in (429, 503):
            entry["headers"] = {"Retry-After": RETRY_AFTER}
        if status == 429:
            entry["headers"] |= RATE_LIMIT
        examples = entry.setdefault("content", {JSON: {"examples": {}}})[JSON]["examples"]
        examples[instance.code] = {"value": {"error": instance.to_dict()}}
    return responses


def guarded_responses(
    *errors: PaymentServiceError | type[PaymentServiceError],
) -> Responses:
    """A guarded router's ``responses=``: what every route behind a client key can answer
    before it runs, 401 without a valid key (api.auth) and 429 over the client's request
    budget (api.rate_limit, one token a request), and the router's own ``errors``."""
    return error_responses(
        *errors,
        AuthenticationFailed,
        RateLimited(
            "Too many requests from this client: at most 2 a second (bursts of 4); retry "
            "after 1 s.",
        ),
    )


def success_response(
    model: type[BaseModel], description: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A ``responses=`` entry for a success answer with headers the route sets itself."""
    return {"model": model, "description": description, "headers": headers or {}}


def operation_answers(
    model: type[BaseModel], settled: str, accepted: str = "Accepted; poll Location for the outcome."
) -> Responses:
    """The success entries of an operation answered 202 until it settles within ``?wait``:
    200 (``settled``) and 202 (``accepted``), each with the headers of an idempotent answer
    and the rate limit's."""
    return {
        200: success_response(model, settled, IDEMPOTENT_ANSWER | RATE_LIMIT),
        202: success_response(model, accepted, IDEMPOTENT_ANSWER | RATE_LIMIT),
    }


# What the authentication middleware (api.auth) reads on every request, so on every route.
REQUEST_ID = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": (
        "Your id for this request (1-128 visible ASCII characters): it is on every log line of "
        "the request and its charge, and returned in the answer's X-Request-ID. Made by the "
        "server when absent or malformed."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[!-~]+$"},
}


def read_by_hand(
    *parameters: dict[str, Any],
    body: type[BaseModel] | dict[str, Any] | None = None,
    body_required: bool = True,
) -> dict[str, Any]:
    """A route's ``openapi_extra``: X-Request-ID, plus the parameters and JSON body the route
    reads from the request itself rather than through FastAPI's parameters (``body_required``
    False: a request without a body is taken too, as read_body_model's ``optional``)."""
    extra: dict[str, Any] = {"parameters": [*parameters, REQUEST_ID]}
    if body is not None:
        schema = body if isinstance(body, dict) else body.model_json_schema()
        extra["requestBody"] = {"required": body_required, "content": {JSON: {"schema": schema}}}
    return extra


# What api.request_helpers.client_idempotency_key accepts: 1-255 printable ASCII characters, no
# leading or trailing space (HTTP strips it from header values).
IDEMPOTENCY_KEY_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": "^[!-~]([ -~]*[!-~])?$",
}


# A capture, a void or a cancel is one a payment: idempotent by what it asks, not by a key.
BY_WHAT_IT_ASKS = (
    "Optional: checked (1-255 printable ASCII characters, else 400 idempotency_key_invalid) "
    "and answered back. A payment has one capture or void at a time, and one cancel: the same "
    "request again answers it (Idempotent-Replayed: true) under any key or none, and another "
    "is a 409, so the key adds nothing to decide."
)


def idempotency_key_parameter(description: str) -> dict[str, Any]:
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": description,
        "schema": IDEMPOTENCY_KEY_SCHEMA,
    }


def wait_parameter(description: str) -> dict[str, Any]:
    """``?wait=N`` (api.request_helpers.wait_seconds): whole seconds from 0 to MAX_WAIT_SECONDS,
    which api.openapi writes in as the maximum (the setting is read after the routes are
    declared)."""
    return {
        "name": "wait",
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", "minimum": 0, "default": 0},
    }


# The events the service POSTs to a client's callback endpoint (worker.callback_delivery).
callbacks = APIRouter()


async def _callback(
    event: CallbackEvent,
    webhook_id: Annotated[
        str,
        Header(
            alias="webhook-id", description="The event's id (evt_...): the same on every retry."
        ),
    ],
    webhook_timestamp: Annotated[
        str,
        Header(alias="webhook-timestamp", description="Unix seconds when this attempt was signed."),
    ],
    webhook_signature: Annotated[
        str,
        Header(
            alias="webhook-signature",
            description=(
                "v1,<base64 HMAC-SHA256 of id.timestamp.body>, space-separated, one per "
                "secret of the payment's client (GET /clients/me/callback-secret)."
            ),
        ),
    ],
) -> None:
    pass  # declared, never served: the client's endpoint answers these


def _event_types() -> Iterable[str]:
    return get_args(CallbackEvent.model_fields["type"].annotation)


for _event_type in _event_types():
    callbacks.add_api_route(
        _event_type,
        _callback,
        methods=["POST"],
        operation_id="on_" + _event_type.replace(".", "_"),
        summary="An event of a payment or refund, signed (Standard Webhooks)",
        status_code=200,
        response_class=Response,
        response_description=(
            "Any 2xx acknowledges it. 410 Gone stops it at once (a dead letter). Anything "
            "else, or no status line within 15 s, is retried with backoff for about a day, no "
            "sooner than a 429's or 503's Retry-After, then kept as a dead letter."
        ),
    )

_EXAMPLE_PAYMENT = "pay_3f9c2a7be1d04c55a9e1f0d2"

# What POST /payments answers for a payment (or a replay of it) and for its accept, besides its
# own field checks, its scope and its key: a batch item's result carries the same.
ACCEPT_ERRORS: tuple[PaymentServiceError | type[PaymentServiceError], ...] = (
    CardDeclined(payment_id=_EXAMPLE_PAYMENT),
    PaymentMethodMissing(payment_id=_EXAMPLE_PAYMENT),
    CustomerNotFound(payment_id=_EXAMPLE_PAYMENT),
    CustomerNotOwned(payment_id=_EXAMPLE_PAYMENT),
    # A replay of a payment that expired or was canceled.
    PaymentExpired(payment_id=_EXAMPLE_PAYMENT),
    PaymentCanceled(payment_id=_EXAMPLE_PAYMENT),
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    UpstreamError,
    ServiceUnavailable(
        "Too many payments are waiting to be charged; retry shortly.", code="queue_full"
    ),
    StripeUnavailable,
    StoreUnavailable,
)
