"""Payment routes: accept, poll, and the customer's payments read from Stripe."""

from __future__ import annotations

import re
import secrets
import time
from typing import Annotated

import structlog
from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.responses import Response

from api.deps import GatewayDep, ServiceDep
from api.errors import json_response, validation_error
from api.schemas import (
    CHARGE_ID_PATTERN,
    CUSTOMER_ID_PATTERN,
    PAYMENT_ID_PATTERN,
    CustomerPayments,
    Payment,
    PaymentRequest,
    error_responses,
)
from api.service import PaymentService
from api.waiter import PaymentWaiter
from shared.config import Settings
from shared.errors import (
    InvalidRequest,
    PayloadTooLarge,
    PaymentNotFound,
    UnsupportedMediaType,
)
from shared.records import PaymentRecord, Status

router = APIRouter()
log = structlog.get_logger(__name__)

_CUSTOMER_ID = re.compile(CUSTOMER_ID_PATTERN)
_PAYMENT_ID = re.compile(PAYMENT_ID_PATTERN)
_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")

_POST_OPENAPI = {
    "parameters": [
        {
            "name": "wait",
            "in": "query",
            "required": False,
            "description": "Seconds to wait for the outcome (0-30).",
            "schema": {"type": "integer", "minimum": 0, "maximum": 30, "default": 0},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PaymentRequest.model_json_schema()}},
    },
}
_WAIT = re.compile(r"[0-9]{1,2}")


def wait_seconds(raw: str | None) -> int:
    if raw is None:
        return 0
    if not _WAIT.fullmatch(raw) or int(raw) > 30:
        raise validation_error([{"loc": ("query", "wait"), "type": "int_parsing"}])
    return int(raw)


async def read_json_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (never buffered whole)."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body must be at most {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body must be at most {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def client_idempotency_key(request: Request) -> str:
    key = request.headers.get("idempotency-key")
    if key is None:
        return "auto_" + secrets.token_hex(16)
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidRequest(
            "Idempotency-Key must be 1-255 printable ASCII characters.",
            code="idempotency_key_invalid",
            param="Idempotency-Key",
        )
    return key


def payment_answer(record: PaymentRecord, *, replayed: bool = False) -> Response:
    """200 once succeeded, the error's status once failed, 202 while still in progress."""
    headers = {"Location": f"/payments/{record.id}", "Idempotency-Key": record.idempotency_key}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    if record.status is Status.SUCCEEDED:
        return json_response(200, record.to_public(), headers)
    if record.is_final and record.error is not None:
        error = {**record.error, "payment_id": record.id}
        return json_response(record.error_status or 402, {"error": error}, headers)
    return json_response(202, record.to_public(), headers)


@router.post(
    "/payments",
    status_code=202,
    response_model=None,
    openapi_extra=_POST_OPENAPI,
    responses={
        200: {"model": Payment, "description": "Succeeded within `wait` seconds."},
        202: {"model": Payment, "description": "Accepted; poll Location for the outcome."},
        **error_responses(400, 402, 404, 409, 413, 415, 422, 429, 502, 503),
    },
)
async def create_payment(request: Request) -> Response:
    """Accept a payment: validate, claim the Idempotency-Key, enqueue the charge, answer."""
    # The hot path: no FastAPI dependency solving (it was 15% of the request's CPU). The
    # objects come straight from app.state, and `wait` is declared in _POST_OPENAPI.
    started = time.perf_counter()
    state = request.app.state
    settings: Settings = state.settings
    service: PaymentService = state.service
    wait = wait_seconds(request.query_params.get("wait"))
    idempotency_key = client_idempotency_key(request)
    body = await read_json_body(request, settings.max_body_bytes)
    try:
        payment = PaymentRequest.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False)) from None
    accepted = await service.accept(
        payment,
        idempotency_key=idempotency_key,
        client=request.state.client,
        headers={"request_id": request.state.request_id},
    )
    record = accepted.record
    state.metrics.accept_seconds.observe(time.perf_counter() - started)
    # A new payment is logged at debug: at INFO one line per accept was 8% of the request's
    # CPU, and the worker's charge.* events carry the same ids (and the request id) anyway.
    (log.info if accepted.replayed else log.debug)(
        "payment.replayed" if accepted.replayed else "payment.accepted",
        payment_id=record.id,
        idempotency_key=idempotency_key,
        status=record.status.value,
    )
    if wait and not record.is_final:
        waiter: PaymentWaiter = state.waiter
        record = await waiter.wait(
            record.id, min(wait, settings.max_wait_seconds), lambda: service.get(record.id)
        )
    return payment_answer(record, replayed=accepted.replayed)


@router.get(
    "/payments/{payment_id}",
    response_model=Payment,
    responses=error_responses(404, 503),
)
async def get_payment(payment_id: str, service: ServiceDep) -> Response:
    """A payment's record: its status, Stripe ids once known, the error once failed."""
    if not _PAYMENT_ID.fullmatch(payment_id):
        raise PaymentNotFound(f"No such payment: {payment_id}", param="id")
    record = await service.get(payment_id)
    return json_response(200, record.to_public())


@router.get(
    "/{customer_id}/payments",
    response_model=CustomerPayments,
    responses=error_responses(400, 404, 502, 503),
)
async def list_customer_payments(
    customer_id: str,
    gateway: GatewayDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[str | None, Query(pattern=CHARGE_ID_PATTERN)] = None,
) -> Response:
    """The customer's payments, newest first, read from Stripe on every call (no cache)."""
    if not _CUSTOMER_ID.fullmatch(customer_id):
        raise validation_error([{"loc": ("path", "customer_id"), "type": "string_pattern"}])
    page = await gateway.list_charges(
        customer=customer_id, limit=limit, starting_after=starting_after
    )
    return json_response(
        200,
        {
            "object": "list",
            "data": [charge.to_dict() for charge in page.data],
            "has_more": page.has_more,
            "next_cursor": page.next_cursor,
        },
    )
