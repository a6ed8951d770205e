"""Refund routes: ``POST /payments/{id}/refunds`` and ``GET /payments/{id}/refunds/{refund_id}``.

Accepting a refund is one Redis step (``AsyncRefundStore.claim``): the refund id derives from
the client and its Idempotency-Key (a replay finds the same refund; another body is a 422), and
the amount is checked against what is left of the charge and held in the same script that
writes the refund and enqueues its task, so concurrent refunds never exceed the charge. No
Stripe call here: ``payments.refund`` (worker.refund_attempts) makes it.
"""

from __future__ import annotations

import re
import time

import structlog
from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.responses import Response

from api.auth import bearer_key
from api.deps import RefundStoreDep
from api.error_responses import FIELD_HINTS, json_response, validation_error, with_retry_after
from api.operation_docs import (
    IDEMPOTENT_ANSWER,
    error_responses,
    idempotency_key_parameter,
    read_by_hand,
    success_response,
    wait_parameter,
)
from api.request_helpers import (
    PAYMENT_ID,
    client_idempotency_key,
    model_response,
    read_json_body,
    viewer_of,
    wait_seconds,
)
from api.schemas import Refund, RefundRequest, refund_view
from api.waiter import PaymentWaiter
from shared.celery_message import task_message
from shared.errors import (
    AuthenticationFailed,
    IdempotencyKeyMismatch,
    InvalidRequest,
    PayloadTooLarge,
    PaymentNotFound,
    PaymentNotRefundable,
    RefundExceedsCharge,
    RefundNotFound,
    StoreUnavailable,
    StripeUnavailable,
    UnsupportedMediaType,
    UpstreamError,
)
from shared.payments.money import AmountError, format_minor
from shared.payments.payment_records import PaymentRecord, now_iso
from shared.payments.refund_records import (
    REFUND_TASK,
    RefundRecord,
    parse_refund_amount,
    refund_fingerprint,
    refund_id_for,
)
from shared.payments.states import RefundStatus
from shared.settings.service_settings import Settings
from shared.store.refund_store import AsyncRefundStore

router = APIRouter(
    dependencies=[Depends(bearer_key)], responses=error_responses(AuthenticationFailed)
)
_REFUND_ID = re.compile(r"ref_[0-9a-f]{24}")
log = structlog.get_logger(__name__)


async def visible_payment(request: Request, payment_id: str) -> PaymentRecord:
    """The payment, if it exists and the caller may see it (else the same 404)."""
    if not PAYMENT_ID.fullmatch(payment_id):
        raise PaymentNotFound(f"No such payment: {payment_id}", param="id")
    record: PaymentRecord = await request.app.state.service.get(payment_id)
    principal = getattr(request.state, "principal", None)
    if record.client not in (None, viewer_of(request)) and not getattr(
        principal, "is_admin", False
    ):
        raise PaymentNotFound(f"No such payment: {payment_id}", param="id")
    return record


def refund_answer(refund: RefundRecord, *, replayed: bool = False) -> Response:
    """200 once succeeded, the error's status once failed, 202 while pending or unknown."""
    headers = {
        "Location": f"/payments/{refund.payment_id}/refunds/{refund.id}",
        "Idempotency-Key": refund.idempotency_key,
    }
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    if refund.status is RefundStatus.SUCCEEDED:
        return model_response(200, refund_view(refund), headers)
    if refund.status is RefundStatus.FAILED and refund.error is not None:
        status = refund.error_status or 502
        error = {**refund.error, "refund_id": refund.id, "payment_id": refund.payment_id}
        return json_response(status, {"error": error}, with_retry_after(status, headers))
    return model_response(202, refund_view(refund), headers)


@router.post(
    "/payments/{payment_id}/refunds",
    operation_id="create_refund",
    status_code=202,
    response_model=None,
    responses={
        200: success_response(Refund, "Refunded within `wait` seconds.", IDEMPOTENT_ANSWER),
        202: success_response(
            Refund, "Accepted; poll Location for the outcome.", IDEMPOTENT_ANSWER
        ),
        **error_responses(
            InvalidRequest(FIELD_HINTS["amount"], code="amount_invalid", param="amount"),
            PaymentNotFound(param="id"),
            PaymentNotRefundable,
            RefundExceedsCharge(param="amount"),
            PayloadTooLarge,
            UnsupportedMediaType,
            IdempotencyKeyMismatch(
                "This Idempotency-Key was already used with a different refund request; use a "
                "new key for a new refund.",
                param="Idempotency-Key",
            ),
            UpstreamError,
            StripeUnavailable,
            StoreUnavailable,
        ),
    },
    openapi_extra=read_by_hand(
        idempotency_key_parameter(
            "As on POST /payments: the same key with the same request answers the same refund "
            "(`Idempotent-Replayed: true`), never a second one; with another request (another "
            "payment or amount) a 422. Scoped to your API key; made by the server when absent."
        ),
        wait_parameter(
            "Seconds to wait for Stripe's answer (0 to MAX_WAIT_SECONDS): 200 once succeeded, "
            "the error's status once failed, 202 if still pending by then."
        ),
        body=RefundRequest,
    ),
)
async def create_refund(request: Request, payment_id: str, store: RefundStoreDep) -> Response:
    """Refund a succeeded payment, all of what is left or ``amount`` of it: claim the
    Idempotency-Key and the amount, enqueue the Stripe refund, answer."""
    settings: Settings = request.app.state.settings
    wait = wait_seconds(request.query_params.get("wait"), settings.max_wait_seconds)
    idempotency_key = client_idempotency_key(request)
    body = await read_json_body(request, settings.max_body_bytes)
    try:
        asked = RefundRequest.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False)) from None
    payment = await visible_payment(request, payment_id)
    amount: int | None = None
    if asked.amount is not None:
        try:
            amount = parse_refund_amount(asked.amount, payment.currency)
        except AmountError as exc:
            raise InvalidRequest(str(exc), code="amount_invalid", param="amount") from exc
    client = viewer_of(request)
    refund_id = refund_id_for(
        secret=settings.payment_id_key, client=client, idempotency_key=idempotency_key
    )
    fingerprint = refund_fingerprint(payment_id=payment_id, amount_minor=amount)
    created = now_iso()
    fields = {
        "id": refund_id,
        "payment_id": payment_id,
        "status": RefundStatus.PENDING.value,
        "currency": payment.currency,
        "idempotency_key": idempotency_key,
        "fingerprint": fingerprint,
        "created_at": created,
        "updated_at": created,
        "client": client,
        "attempts": "0",
    }
    enqueued_at = int(time.time() * 1000)
    fields["enqueued_at"] = str(enqueued_at)  # the recovery sweep's reference
    message = task_message(
        task_name=REFUND_TASK,
        task_id=refund_id,
        args=(refund_id,),
        queue=settings.queue_name,
        headers={"request_id": request.state.request_id, "enqueued_at": enqueued_at},
    )
    claim = await store.claim(
        refund_id=refund_id, payment_id=payment_id, amount_minor=amount,
        fields=fields, message=message,
    )  # fmt: skip
    if claim.payment_missing:
        raise PaymentNotFound(f"No such payment: {payment_id}", param="id")
    if claim.not_refundable is not None:
        raise PaymentNotRefundable(
            f"Only a succeeded payment can be refunded; this one is {claim.not_refundable}.",
            payment_id=payment_id,
        )
    if claim.left_minor is not None:
        left = format_minor(claim.left_minor, payment.currency)
        raise RefundExceedsCharge(
            f"The refund would exceed the charge: {left} {payment.currency} is left to refund.",
            param="amount",
            payment_id=payment_id,
        )
    assert claim.record is not None
    refund = claim.record
    if not claim.created and refund.fingerprint != fingerprint:
        raise IdempotencyKeyMismatch(
            "This Idempotency-Key was already used with a different refund request; use a new "
            "key for a new refund.",
            param="Idempotency-Key",
            refund_id=refund.id,
        )
    (log.info if not claim.created else log.debug)(
        "refund.replayed" if not claim.created else "refund.accepted",
        refund_id=refund.id, payment_id=payment_id, idempotency_key=idempotency_key,
    )  # fmt: skip
    if wait and not refund.is_settled:
        waiter: PaymentWaiter = request.app.state.waiter
        refund = await waiter.wait(refund.id, wait, lambda: _get(store, refund_id))
    return refund_answer(refund, replayed=not claim.created)


async def _get(store: AsyncRefundStore, refund_id: str) -> RefundRecord:
    refund = await store.get(refund_id)
    if refund is None:
        raise RefundNotFound(f"No such refund: {refund_id}", param="refund_id")
    return refund


@router.get(
    "/payments/{payment_id}/refunds/{refund_id}",
    operation_id="get_refund",
    response_model=Refund,
    responses=error_responses(PaymentNotFound(param="id"), RefundNotFound, StoreUnavailable),
    openapi_extra=read_by_hand(),
)
async def get_refund(
    request: Request, payment_id: str, refund_id: str, store: RefundStoreDep
) -> Response:
    """One refund of the payment: its status, Stripe's refund id once known, the error."""
    await visible_payment(request, payment_id)
    if not _REFUND_ID.fullmatch(refund_id):
        raise RefundNotFound(f"No such refund: {refund_id}", param="refund_id")
    refund = await store.get(refund_id)
    if refund is None or refund.payment_id != payment_id:
        raise RefundNotFound(f"No such refund: {refund_id}", param="refund_id")
    return model_response(200, refund_view(refund))
