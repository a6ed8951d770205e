"""Refund routes: ``POST /payments/{id}/refunds`` and ``GET /payments/{id}/refunds/{refund_id}``.

The logic is ``api.refund_service.RefundService``; a route reads the request and writes the
answer.
"""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from api import scopes
from api.deps import RefundServiceDep, SettingsDep
from api.error_responses import FIELD_HINTS
from api.operation_docs import (
    RATE_LIMIT,
    error_responses,
    idempotency_key_parameter,
    operation_answers,
    read_by_hand,
    wait_parameter,
)
from api.request_helpers import (
    NO_PARAMETERS,
    UNKNOWN_PARAMETER,
    client_idempotency_key,
    failed_answer,
    model_response,
    operation_headers,
    principal_of,
    read_body_model,
    refuse_unknown_parameters,
    settled_within,
    wait_of,
)
from api.schemas import Refund, RefundRequest, refund_view
from shared.errors import (
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
from shared.payments.refund_records import RefundRecord
from shared.payments.states import RefundStatus

router = scopes.guarded_router("payments")


def refund_answer(refund: RefundRecord, *, replayed: bool = False) -> Response:
    """200 once succeeded, the error's status once failed, 202 while pending or unknown."""
    headers = operation_headers(
        f"/payments/{refund.payment_id}/refunds/{refund.id}",
        refund.idempotency_key,
        replayed=replayed,
    )
    if refund.status is RefundStatus.SUCCEEDED:
        return model_response(200, refund_view(refund), headers)
    if refund.status is RefundStatus.FAILED and refund.error is not None:
        error = {**refund.error, "refund_id": refund.id, "payment_id": refund.payment_id}
        return failed_answer(refund.error_status or 502, error, headers)
    return model_response(202, refund_view(refund), headers)


@router.post(
    "/payments/{payment_id}/refunds",
    operation_id="create_refund",
    status_code=202,
    response_model=None,
    responses={
        **operation_answers(Refund, "Refunded within `wait` seconds."),
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
async def create_refund(
    request: Request, payment_id: str, refunds: RefundServiceDep, settings: SettingsDep
) -> Response:
    """Refund a succeeded payment, all of what is left or ``amount`` of it: claim the
    Idempotency-Key and the amount, enqueue the Stripe refund, answer."""
    wait = wait_of(request, settings.max_wait_seconds)
    idempotency_key = client_idempotency_key(request)
    asked = await read_body_model(request, RefundRequest, settings.max_body_bytes)
    accepted = await refunds.accept(
        asked,
        payment_id=payment_id,
        idempotency_key=idempotency_key,
        principal=principal_of(request),
        request_id=request.state.request_id,
    )
    refund = accepted.record
    refund = await settled_within(request, refund.id, refund, wait, lambda: refunds.get(refund.id))
    return refund_answer(refund, replayed=accepted.replayed)


@router.get(
    "/payments/{payment_id}/refunds/{refund_id}",
    operation_id="get_refund",
    response_model=Refund,
    responses={
        200: {"headers": RATE_LIMIT},
        **error_responses(
            UNKNOWN_PARAMETER, PaymentNotFound(param="id"), RefundNotFound, StoreUnavailable
        ),
    },
    openapi_extra=read_by_hand(),
)
async def get_refund(
    request: Request, payment_id: str, refund_id: str, refunds: RefundServiceDep
) -> Response:
    """One refund of the payment: its status, Stripe's refund id once known, the error."""
    refuse_unknown_parameters(request, NO_PARAMETERS)
    refund = await refunds.get_for(payment_id, refund_id, principal_of(request))
    return model_response(200, refund_view(refund))
