"""The OpenAPI document as a generated client and a reader of /docs see it: explicit operation
ids (a client's functions are named after them), the service's own error bodies as examples, and
no answer FastAPI would document that the service never gives."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from api.auth import OPEN_PATHS
from api.schemas import ErrorResponse
from shared.payments.metadata import MAX_KEYS, RESERVED_KEYS

SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")

# What a client generated from the document calls: renaming one breaks every such client.
OPERATION_IDS = {
    ("GET", "/healthz"): "check_health",
    ("GET", "/readyz"): "check_readiness",
    ("POST", "/payments"): "create_payment",
    ("POST", "/payments/batch"): "create_payment_batch",
    ("GET", "/payments/{payment_id}"): "get_payment",
    ("GET", "/{customer_id}/payments"): "list_customer_payments",
    ("GET", "/payments"): "list_payments",
    ("POST", "/payments/{payment_id}/refunds"): "create_refund",
    ("POST", "/payments/{payment_id}/capture"): "capture_payment",
    ("GET", "/payments/{payment_id}/refunds/{refund_id}"): "get_refund",
    ("POST", "/payments/{payment_id}/cancel"): "cancel_payment",
    ("POST", "/webhooks/stripe"): "receive_stripe_event",
    ("GET", "/metrics"): "get_metrics",
    ("GET", "/admin/dead-letters"): "list_dead_letters",
    ("POST", "/admin/dead-letters/{payment_id}/replay"): "replay_dead_letter",
    ("GET", "/clients/me/callback-secret"): "get_callback_secret",
}


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for section in ("paths", "webhooks")
        for path, operations in document.get(section, {}).items()
        for method, operation in operations.items()
    ]


def test_every_operation_has_an_explicit_snake_case_id(app: FastAPI) -> None:
    routes = [
        context.original_route
        for context in iter_route_contexts([*app.routes, *app.webhooks.routes])
        # A route left out of the document (the batch path's wrong methods) is no operation.
        if isinstance(context.original_route, APIRoute) and context.original_route.include_in_schema
    ]
    for route in routes:
        # Without one, FastAPI makes it from the function, path and method
        # (create_payment_payments_post), and a generated client is named after that.
        assert route.operation_id, f"{route.methods} {route.path} has no explicit operation id"
    ids = [operation["operationId"] for _, _, operation in _operations(app.openapi())]
    assert len(ids) == len(routes)
    assert len(set(ids)) == len(ids)
    for operation_id in ids:
        assert SNAKE_CASE.fullmatch(operation_id), operation_id


def test_the_routes_keep_the_operation_ids_clients_are_named_after(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    found = {
        (method.upper(), path): operation["operationId"]
        for path, operations in paths.items()
        for method, operation in operations.items()
    }
    assert found == OPERATION_IDS


def test_the_callbacks_the_service_sends_are_documented_as_webhooks(app: FastAPI) -> None:
    webhooks = app.openapi()["webhooks"]
    succeeded = webhooks["payment.succeeded"]["post"]
    assert succeeded["operationId"] == "on_payment_succeeded"
    headers = {p["name"] for p in succeeded["parameters"] if p["required"]}
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= headers
    body = succeeded["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/CallbackEvent"}


def test_every_error_example_is_an_error_object_the_service_gives(app: FastAPI) -> None:
    """The examples are rendered from the service's own errors, so they parse as the documented
    ErrorResponse; every error status of a route shows at least one."""
    for method, path, operation in _operations(app.openapi()):
        for status, response in operation["responses"].items():
            if not status.startswith(("4", "5")):
                continue
            examples = response["content"]["application/json"]["examples"]
            assert examples, f"{method} {path} {status} has no example"
            for example in examples.values():
                ErrorResponse.model_validate(example["value"])


def test_every_route_declares_the_431_the_middleware_answers_for_oversized_headers(
    app: FastAPI,
) -> None:
    document = app.openapi()
    for method, path, operation in _operations(document):
        if path in document.get("webhooks", {}):
            continue  # the callbacks the service sends: their receivers' answers
        assert "431" in operation["responses"], f"{method} {path}"


def test_no_route_documents_fastapis_validation_answer(app: FastAPI) -> None:
    """A request FastAPI's validation refuses is answered 400 with the service's error object;
    422 is only a reused Idempotency-Key."""
    document = app.openapi()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for method, path, operation in _operations(document):
        unprocessable = operation["responses"].get("422")
        # A batch's 422: every item's key reused with another payment, in its results.
        answer = "PaymentBatchAnswer" if path == "/payments/batch" else "ErrorResponse"
        if unprocessable is not None:
            assert unprocessable["content"]["application/json"]["schema"] == {
                "$ref": f"#/components/schemas/{answer}"
            }, f"{method} {path}"


def test_every_route_declares_the_request_id_the_middleware_reads(app: FastAPI) -> None:
    for method, path, operation in _operations(app.openapi()):
        if path in app.openapi().get("webhooks", {}):
            continue
        names = {p["name"] for p in operation["parameters"]}
        assert "X-Request-ID" in names, f"{method} {path}"


def test_every_route_behind_a_key_declares_its_429_and_budget_headers(app: FastAPI) -> None:
    """Every request with a client key takes a token (api.rate_limit): each such route says it
    can answer 429 with when to come back and what is left, and its successes carry the
    budget; the routes without a key never answer 429 for the client's budget."""
    guarded = 0
    for method, path, operation in _operations(app.openapi()):
        responses = operation["responses"]
        if path in OPEN_PATHS or path in app.openapi().get("webhooks", {}):
            assert "429" not in responses, f"{method} {path}"
            continue
        guarded += 1
        refused = responses.get("429")
        assert refused is not None, f"{method} {path} does not declare its 429"
        assert {"Retry-After", "RateLimit-Policy", "RateLimit"} <= set(refused["headers"])
        assert "rate_limited" in refused["content"]["application/json"]["examples"]
        for status, response in responses.items():
            if status.startswith("2"):
                headers = set(response.get("headers", {}))
                assert {"RateLimit-Policy", "RateLimit"} <= headers, f"{method} {path} {status}"
    assert guarded == len(OPERATION_IDS) - len(OPEN_PATHS & {p for _, p in OPERATION_IDS})


def test_metadata_and_description_are_shown_with_stripes_limits(app: FastAPI) -> None:
    document = app.openapi()
    schemas = document["components"]["schemas"]
    create = document["paths"]["/payments"]["post"]
    request = create["requestBody"]["content"]["application/json"]["schema"]["properties"]
    metadata = next(s for s in request["metadata"]["anyOf"] if s.get("type") == "object")
    assert metadata["maxProperties"] == MAX_KEYS == 48
    assert metadata["propertyNames"]["maxLength"] == 40
    assert metadata["propertyNames"]["not"]["enum"] == sorted(RESERVED_KEYS)
    assert metadata["additionalProperties"] == {"type": "string", "maxLength": 500}
    description = next(s for s in request["description"]["anyOf"] if s.get("type") == "string")
    assert description["maxLength"] == 1000
    for answer in ("Payment", "CustomerCharge"):
        assert {"metadata", "description"} <= set(schemas[answer]["properties"])
    callback_data = schemas["CallbackEvent"]["properties"]["data"]["description"]
    assert "description, metadata" in callback_data
    codes = set(create["responses"]["400"]["content"]["application/json"]["examples"])
    assert {"metadata_invalid", "metadata_key_reserved", "description_invalid"} <= codes


def test_the_api_doc_names_every_operation_id_and_the_csv_columns_in_order() -> None:
    """docs/API.md's list of operation ids and of the CSV export's columns, which a client
    maps columns by, are the document's and the code's."""
    from api.payment_list import CSV_COLUMNS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "API.md").read_text(encoding="utf-8")
    flat = " ".join(doc.split())
    listed = flat.split("Every operation has an explicit id", 1)[1].split(")", 1)[0]
    assert set(re.findall(r"`([a-z_]+)`", listed)) == set(OPERATION_IDS.values())
    columns = flat.split("The columns, in this order:", 1)[1].split("A cell starting", 1)[0]
    named = [c for c in re.findall(r"`([a-z_]+)`", columns) if c in CSV_COLUMNS]
    assert named == list(CSV_COLUMNS)
