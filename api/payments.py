"""Payment routes: accept, poll, and the customer's payments read from Stripe."""

from __future__ import annotations

import re
import time
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from api import scopes
from api.auth import bearer_key
from api.customer_charges import charges_for
from api.deps import ChargesDep, ListLimiterDep, RefundStoreDep, ServiceDep
from api.error_responses import FIELD_HINTS, JSON, validation_error, with_retry_after
from api.list_limit import ListBusy
from api.operation_docs import (
    ACCEPT_ERRORS,
    RATE_LIMIT,
    error_responses,
    guarded_responses,
    idempotency_key_parameter,
    operation_answers,
    read_by_hand,
    wait_parameter,
)
from api.rate_limit import take_token
from api.request_helpers import (
    NO_PARAMETERS,
    PAYMENT_ID,
    UNKNOWN_PARAMETER,
    client_idempotency_key,
    model_response,
    operation_headers,
    read_json_body,
    record_answer,
    refuse_unknown_parameters,
    settled_within,
    viewer_of,
    wait_of,
)
from api.schemas import (
    CHARGE_ID_PATTERN,
    CUSTOMER_ID_PATTERN,
    CustomerPayments,
    Payment,
    PaymentRequest,
    QueueFigures,
    customer_payments_json,
    payment_view,
)
from api.service import PaymentService
from shared.errors import (
    CustomerNotFound,
    IdempotencyKeyMismatch,
    InvalidRequest,
    PaymentNotFound,
    PaymentServiceError,
    RateLimited,
    StoreUnavailable,
    StripeUnavailable,
    UpstreamError,
)
from shared.payments.metadata import key_reserved, value_too_long
from shared.payments.payment_records import PaymentRecord
from shared.settings.service_settings import Settings

router = APIRouter(
    dependencies=[Depends(bearer_key)],
    responses=guarded_responses(),
)
log = structlog.get_logger(__name__)

_CUSTOMER_ID = re.compile(CUSTOMER_ID_PATTERN)
_LIST_PARAMETERS = frozenset({"limit", "starting_after"})


def payment_answer(
    record: PaymentRecord, *, replayed: bool = False, queue: QueueFigures | None = None
) -> Response:
    """200 once succeeded (or authorized, or an authorization released), the error's status
    once failed (or expired, or canceled), 202 while still in progress (with ``queue``, where it
    stands, while queued)."""
    headers = operation_headers(f"/payments/{record.id}", record.idempotency_key, replayed=replayed)
    status, member, body = record_answer(record, queue)
    if member == "error":
        body = b'{"error":' + body + b"}"
    return Response(body, status_code=status, media_type=JSON,
                    headers=with_retry_after(status, headers))  # fmt: skip


@router.post(
    "/payments",
    operation_id="create_payment",
    status_code=202,
    response_model=None,
    responses={
        **operation_answers(Payment, "Succeeded within `wait` seconds."),
        **error_responses(
            InvalidRequest(FIELD_HINTS["amount"], code="amount_invalid", param="amount"),
            value_too_long("order_id"),
            key_reserved("payment_id"),
            InvalidRequest(
                "expires_at must be in the future.", code="expires_at_invalid", param="expires_at"
            ),
            InvalidRequest(
                "Give expires_at or expires_in, not both.",
                code="parameters_exclusive",
                param="expires_in",
            ),
            InvalidRequest(
                FIELD_HINTS["description"], code="description_invalid", param="description"
            ),
            InvalidRequest(
                "Idempotency-Key must be 1-255 printable ASCII characters.",
                code="idempotency_key_invalid",
                param="Idempotency-Key",
            ),
            *ACCEPT_ERRORS,
            scopes.refused("payments"),
            IdempotencyKeyMismatch(param="Idempotency-Key"),
        ),
    },
    openapi_extra=read_by_hand(
        idempotency_key_parameter(
            "1-255 printable ASCII characters, scoped to your API key; made by the server (and "
            "returned in the answer's Idempotency-Key) when absent. The same key with the same "
            "request gives the same payment, never a second charge, answered with "
            "`Idempotent-Replayed: true` and the payment's current state; the same key with a "
            "different request is a 422 `idempotency_key_reused`. Concurrent requests with one "
            "key share one payment. A key is kept as long as its payment (RECORD_TTL_SECONDS)."
        ),
        wait_parameter(
            "Seconds to wait for the outcome (0 to MAX_WAIT_SECONDS): 200 once succeeded, the "
            "error's status once failed, 202 if still running by then."
        ),
        body=PaymentRequest,
    ),
)
async def create_payment(request: Request) -> Response:
    """Accept a payment: validate, claim the Idempotency-Key, enqueue the charge, answer."""
    # Served by api.accept_asgi.AcceptFastPath ahead of the router; this route declares it
    # (OpenAPI) and serves it where the fast path is not installed.
    return await accept_payment(request)


async def accept_payment(request: Request) -> Response:
    """``POST /payments``. The hot path: no FastAPI dependency solving, a large share of the
    request's CPU for what it would do here. The objects come straight from app.state; the
    parameters read by hand are declared in the route's ``openapi_extra``."""
    started = time.perf_counter()
    state = request.app.state
    settings: Settings = state.settings
    service: PaymentService = state.service
    principal = getattr(request.state, "principal", None)
    try:
        scopes.check(request, "payments")
        wait = wait_of(request, settings.max_wait_seconds)
        idempotency_key = client_idempotency_key(request)
        body = await read_json_body(request, settings.max_body_bytes)
        new = service.parse(body, idempotency_key=idempotency_key, client=request.state.client)
    except PaymentServiceError as invalid:
        # Never claimed, so the accept script took no token: a refused request takes one
        # here (429 instead once the client is over its rate).
        invalid.headers = {**invalid.headers, **await take_token(service, principal)}
        raise
    accepted = await service.claim(
        new, headers={"request_id": request.state.request_id}, principal=principal
    )
    record = accepted.record
    state.metrics.accept_seconds.observe(time.perf_counter() - started)
    # A new payment is logged at debug: a line per accept is a measurable share of the
    # request's CPU, and the worker's charge.* events carry the same ids (and request id).
    (log.info if accepted.replayed else log.debug)(
        "payment.replayed" if accepted.replayed else "payment.accepted",
        payment_id=record.id,
        idempotency_key=idempotency_key,
        status=record.status.value,
    )
    record = await settled_within(request, record.id, record, wait, lambda: service.get(record.id))
    answer = payment_answer(record, replayed=accepted.replayed, queue=accepted.queue)
    answer.headers.update(accepted.rate_limit_headers)
    return answer


@router.get(
    "/payments/{payment_id}",
    operation_id="get_payment",
    response_model=Payment,
    dependencies=[Depends(scopes.require("payments"))],
    responses={
        200: {"headers": RATE_LIMIT},
        **error_responses(
            scopes.refused("payments"),
            UNKNOWN_PARAMETER,
            PaymentNotFound,
            RateLimited,
            StoreUnavailable,
        ),
    },
    openapi_extra=read_by_hand(),
)
async def get_payment(
    request: Request, payment_id: str, service: ServiceDep, refund_store: RefundStoreDep
) -> Response:
    """A payment's record: its status, Stripe ids once known, the error once failed (or
    expired, or canceled); while requires_action, ``next_action`` and (for the client that
    made it) ``client_secret``; while queued, ``queue``: where it stands (an estimate)."""
    refuse_unknown_parameters(request, NO_PARAMETERS)
    if not PAYMENT_ID.fullmatch(payment_id):
        raise PaymentNotFound(f"No such payment: {payment_id}", param="id")
    record = await service.get_for(payment_id, getattr(request.state, "principal", None))
    refunds = await refund_store.of_payment(payment_id)
    queue = await service.standing(record)
    view = payment_view(record, viewer=viewer_of(request), refunds=refunds, queue=queue)
    return model_response(200, view)


@router.get(
    "/{customer_id}/payments",
    operation_id="list_customer_payments",
    response_model=CustomerPayments,
    dependencies=[Depends(scopes.require("payments", "customers:all"))],
    responses={
        200: {"headers": RATE_LIMIT},
        **error_responses(
            scopes.refused("payments", "customers:all"),
            InvalidRequest(
                FIELD_HINTS["customer_id"], code="customer_id_invalid", param="customer_id"
            ),
            CustomerNotFound(param="customer_id"),
            RateLimited,
            UpstreamError,
            ListBusy(retry_after=1),
            StripeUnavailable,
            StoreUnavailable,
        ),
    },
    openapi_extra=read_by_hand(),
)
async def list_customer_payments(
    request: Request,
    customer_id: str,
    charges: ChargesDep,
    service: ServiceDep,
    limiter: ListLimiterDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[str | None, Query(pattern=CHARGE_ID_PATTERN)] = None,
) -> Response:
    """The customer's payments, newest first, read from Stripe on every call (no cache);
    without ``customers:all``, only the caller's own (``api.customer_charges``).
    At most LIST_MAX_CONCURRENCY run at once per process, and the client's share of them;
    past it, 503 + Retry-After."""
    if not _CUSTOMER_ID.fullmatch(customer_id):
        raise validation_error([{"loc": ("path", "customer_id"), "type": "string_pattern"}])
    refuse_unknown_parameters(request, _LIST_PARAMETERS)
    principal = getattr(request.state, "principal", None)
    if not await service.may_list(principal, customer_id):
        # The same answer as for a customer Stripe does not know: nothing to probe.
        raise CustomerNotFound(f"No such customer: {customer_id}", param="customer_id")
    async with limiter.slot(principal):
        page = await charges_for(charges, customer=customer_id, limit=limit,
                                 starting_after=starting_after,
                                 client=service.charges_of(principal),
                                 owners_of=service.clients_of)  # fmt: skip
        return Response(customer_payments_json(page), status_code=200, media_type=JSON)
