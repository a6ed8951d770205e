"""The OpenAPI document (``/openapi.json``, shown at ``/docs``): what FastAPI generates from the
routes and ``api.schemas``, corrected where the service answers differently from FastAPI's
defaults, and completed with what the routes read by hand (the bearer key, headers, ``wait``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.auth import OPEN_PATHS
from api.schemas import CallbackEvent, PaymentRequest, RefundRequest
from shared.settings.service_settings import Settings

ERROR_RESPONSE_REF = {"$ref": "#/components/schemas/ErrorResponse"}
# What api.payments accepts as an Idempotency-Key (POST /payments and refunds): 1-255
# printable ASCII characters, no leading or trailing space (HTTP strips it from header values).
IDEMPOTENCY_KEY_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": "^[!-~]([ -~]*[!-~])?$",
}


def _wait_schema(settings: Settings) -> dict[str, Any]:
    """``?wait=N`` (api.payments.wait_seconds): whole seconds up to MAX_WAIT_SECONDS."""
    return {"type": "integer", "minimum": 0, "maximum": settings.max_wait_seconds, "default": 0}


# What the middleware accepts as a request id (api.auth): otherwise one is made.
REQUEST_ID_PARAMETER = {
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


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the corrected document (built once, on first request) at ``/openapi.json``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build(app: FastAPI, settings: Settings) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    _drop_fastapi_validation_errors(schema)
    _declare_bearer_auth(schema)
    for operations in schema["paths"].values():
        for operation in operations.values():
            operation.setdefault("parameters", []).append(REQUEST_ID_PARAMETER)
    _describe_create_payment(schema["paths"]["/payments"]["post"], settings)
    _describe_lifecycle(schema, settings)  # issue 11: webhooks in, refunds, callbacks
    _retry_after_on_503(schema)
    return schema


def _drop_fastapi_validation_errors(schema: dict[str, Any]) -> None:
    """FastAPI documents a 422 validation answer on every route; this service answers 400 with
    its own error object instead (422 is only a reused Idempotency-Key)."""
    for operations in schema["paths"].values():
        for operation in operations.values():
            responses = operation["responses"]
            generated = responses.get("422", {}).get("content", {})
            if "HTTPValidationError" in str(generated):
                del responses["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)


def _declare_bearer_auth(schema: dict[str, Any]) -> None:
    """Every route but the health checks needs ``Authorization: Bearer <key>`` (api.auth): so
    the document says so, and /docs offers "Authorize" to send the key with each call."""
    schema.setdefault("components", {})["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A client key from API_KEYS (make run writes one to .run/api-key).",
        }
    }
    for path, operations in schema["paths"].items():
        if path in OPEN_PATHS:
            continue
        for operation in operations.values():
            operation["security"] = [{"bearer": []}]
            operation["responses"].setdefault(
                "401",
                {
                    "description": "Missing or unknown API key",
                    "content": {"application/json": {"schema": ERROR_RESPONSE_REF}},
                },
            )


def _describe_create_payment(operation: dict[str, Any], settings: Settings) -> None:
    """``POST /payments`` reads its body, ``wait`` and ``Idempotency-Key`` itself (no FastAPI
    parameter solving on the hot path), so they are declared here."""
    ttl_days = settings.record_ttl_seconds / 86400
    operation["parameters"][:0] = [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": (
                "1-255 printable ASCII characters, scoped to your API key; made by the server "
                "(and returned in the answer's Idempotency-Key) when absent. The same key with "
                "the same request gives the same payment, never a second charge, answered with "
                "`Idempotent-Replayed: true` and the payment's current state; the same key with "
                "a different request is a 422 `idempotency_key_reused`. Concurrent requests "
                "with one key share one payment. A key lives as long as its payment's record, "
                f"{ttl_days:g} days (RECORD_TTL_SECONDS)."
            ),
            "schema": IDEMPOTENCY_KEY_SCHEMA,
        },
        {
            "name": "wait",
            "in": "query",
            "required": False,
            "description": (
                f"Seconds to wait for the outcome (0-{settings.max_wait_seconds}, "
                "MAX_WAIT_SECONDS): 200 once succeeded, the error's status once failed, 202 if "
                "still running by then."
            ),
            "schema": _wait_schema(settings),
        },
    ]
    operation["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": PaymentRequest.model_json_schema()}},
    }
    answer_headers = {
        "Location": {
            "description": "The payment's URL, to poll.",
            "schema": {"type": "string"},
        },
        "Idempotency-Key": {
            "description": "The request's key: yours, or the one the server made.",
            "schema": {"type": "string"},
        },
        "Idempotent-Replayed": {
            "description": "`true` when this answers an earlier request with the same key.",
            "schema": {"type": "string", "enum": ["true"]},
        },
    }
    for status in ("200", "202"):
        operation["responses"][status]["headers"] = answer_headers


def _describe_lifecycle(schema: dict[str, Any], settings: Settings) -> None:
    """``POST /webhooks/stripe`` reads its raw body and ``Stripe-Signature`` itself (the
    signature is over the exact bytes)."""
    _describe_callbacks(schema)
    refunds = schema["paths"].get("/payments/{payment_id}/refunds", {}).get("post")
    if refunds is not None:
        _describe_create_refund(refunds, settings)
    webhook = schema["paths"].get("/webhooks/stripe", {}).get("post")
    if webhook is not None:
        webhook["parameters"][:0] = [
            {
                "name": "Stripe-Signature",
                "in": "header",
                "required": True,
                "description": (
                    "Stripe's signature of the raw body (t=<unix time>,v1=<HMAC-SHA256>), "
                    "checked with STRIPE_WEBHOOK_SECRET's secrets and a 300 s tolerance. "
                    "Missing, malformed, stale or wrong: 400 signature_invalid, nothing recorded."
                ),
                "schema": {"type": "string"},
            }
        ]
        webhook["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "description": "A Stripe Event object, as Stripe sends it.",
                        "required": ["id", "type", "data"],
                        "properties": {
                            "id": {"type": "string"},
                            "type": {"type": "string"},
                            "data": {"type": "object"},
                        },
                    }
                }
            },
        }


def _describe_callbacks(schema: dict[str, Any]) -> None:
    """The events the service POSTs to a client's callback endpoint (OpenAPI 3.1 webhooks)."""
    schema.setdefault("components", {}).setdefault("schemas", {})["CallbackEvent"] = (
        CallbackEvent.model_json_schema()
    )
    headers = [
        ("webhook-id", "The event's id (evt_...): the same on every retry."),
        ("webhook-timestamp", "Unix seconds when this attempt was signed."),
        ("webhook-signature", "v1,<base64 HMAC-SHA256 of id.timestamp.body>, space-separated, "
         "one per CALLBACK_SIGNING_SECRETS secret."),
    ]  # fmt: skip
    operation = {
        "summary": "An event of a payment or refund, signed (Standard Webhooks)",
        "parameters": [
            {
                "name": name,
                "in": "header",
                "required": True,
                "description": text,
                "schema": {"type": "string"},
            }
            for name, text in headers
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/CallbackEvent"}}
            },
        },
        "responses": {
            "200": {
                "description": (
                    "Any 2xx acknowledges it. Anything else, or no answer within 10 s, is "
                    "retried with backoff for about a day, then kept as a dead letter."
                )
            }
        },
    }
    schema["webhooks"] = {
        event_type: {"post": {**operation, "operationId": f"callback_{event_type}"}}
        for event_type in CallbackEvent.model_fields["type"].annotation.__args__  # type: ignore[union-attr]
    }


def _describe_create_refund(operation: dict[str, Any], settings: Settings) -> None:
    """``POST /payments/{id}/refunds`` reads its body, ``wait`` and ``Idempotency-Key`` by hand,
    as ``POST /payments`` does: declared here, with the same semantics."""
    operation["parameters"][:0] = [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": (
                "As on POST /payments: the same key with the same request answers the same "
                "refund (`Idempotent-Replayed: true`), never a second one; with another request "
                "(another payment or amount) a 422. Scoped to your API key; made by the server "
                "when absent."
            ),
            "schema": IDEMPOTENCY_KEY_SCHEMA,
        },
        {
            "name": "wait",
            "in": "query",
            "required": False,
            "description": (
                f"Seconds to wait for Stripe's answer (0-{settings.max_wait_seconds}): 200 once "
                "succeeded, the error's status once failed, 202 if still pending by then."
            ),
            "schema": _wait_schema(settings),
        },
    ]
    operation["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": RefundRequest.model_json_schema()}},
    }


def _retry_after_on_503(schema: dict[str, Any]) -> None:
    for operations in schema["paths"].values():
        for operation in operations.values():
            unavailable = operation["responses"].get("503")
            if unavailable is not None:
                unavailable["headers"] = {
                    "Retry-After": {
                        "description": "Seconds to wait before trying again.",
                        "schema": {"type": "string", "pattern": "^[0-9]+$"},
                    }
                }
