"""``POST /payments/{id}/cancel``: the one place a payment is canceled.

A payment not yet sent to Stripe ends ``canceled`` at once, never to be charged
(``PaymentService.cancel``); one already sent, or final, is decided by
``PaymentService.cancel_sent``. An authorization (``requires_capture``) is voided instead: the
void is queued like a capture (``CaptureService.void``, ``api.capture_routes``). The route reads
nothing but the id (and ``?wait``, for a void) and answers the payment.
"""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from api import scopes
from api.capture_answers import capture_answer, wait_for_capture
from api.capture_service import CaptureService
from api.deps import ServiceDep
from api.operation_docs import (
    BY_WHAT_IT_ASKS,
    IDEMPOTENT_ANSWER,
    RATE_LIMIT,
    error_responses,
    idempotency_key_parameter,
    read_by_hand,
    success_response,
    wait_parameter,
)
from api.request_helpers import (
    PAYMENT_ID,
    model_response,
    principal_of,
    read_body_model,
    sent_idempotency_key,
    viewer_of,
    wait_of,
)
from api.schemas import CancelRequest, Payment, payment_view
from shared.errors import (
    AlreadyCaptured,
    InvalidRequest,
    NotDurable,
    PayloadTooLarge,
    PaymentInProgress,
    PaymentNotCancelable,
    PaymentNotCapturable,
    PaymentNotFound,
    StoreUnavailable,
    StripeUnavailable,
    UnsupportedMediaType,
    UpstreamError,
)
from shared.payments.states import Status
from shared.settings.service_settings import Settings

router = scopes.guarded_router("payments")


@router.post(
    "/payments/{payment_id}/cancel",
    operation_id="cancel_payment",
    response_model=Payment,
    responses={
        200: {
            "description": (
                "Canceled: never sent to Stripe, never charged (also the answer to a cancel "
                "of a payment canceled already); for an authorization, voided within `wait` "
                "seconds: nothing captured."
            ),
            "headers": IDEMPOTENT_ANSWER | RATE_LIMIT,
        },
        202: success_response(
            Payment,
            "An authorization's void, accepted (`capture.action` void, `capture.status` "
            "pending); poll Location for the outcome.",
            IDEMPOTENT_ANSWER | RATE_LIMIT,
        ),
        **error_responses(
            PaymentNotFound,
            PaymentInProgress(payment_id="pay_3f9c2a7be1d04c55a9e1f0d2"),
            PaymentNotCancelable(
                "The payment is succeeded and can no longer be canceled.",
                payment_id="pay_3f9c2a7be1d04c55a9e1f0d2",
            ),
            PaymentNotCapturable(
                "This payment's authorization already has a capture (pending); only the same "
                "request may be made again.",
                payment_id="pay_3f9c2a7be1d04c55a9e1f0d2",
            ),
            AlreadyCaptured(payment_id="pay_3f9c2a7be1d04c55a9e1f0d2"),
            InvalidRequest(
                "wait must be a whole number of seconds from 0 to 30",
                code="wait_invalid",
                param="wait",
            ),
            InvalidRequest(
                "Received unknown parameter: cancellation_reason",
                code="parameter_unknown",
                param="cancellation_reason",
            ),
            PayloadTooLarge,
            UnsupportedMediaType,
            NotDurable,
            UpstreamError,
            StripeUnavailable,
            StoreUnavailable,
        ),
    },
    openapi_extra=read_by_hand(
        idempotency_key_parameter(BY_WHAT_IT_ASKS),
        wait_parameter(
            "For an authorization's void: seconds to wait for Stripe's answer (0 to "
            "MAX_WAIT_SECONDS): 200 once voided, the error's status once failed, 202 if still "
            "pending by then."
        ),
        body=CancelRequest,
        body_required=False,
    ),
)
async def cancel_payment(request: Request, payment_id: str, service: ServiceDep) -> Response:
    """Cancel a payment whose charge has not been sent to Stripe yet (status `queued`): it
    becomes `canceled` and is guaranteed never to be charged (a `payment.canceled` callback
    follows). A payment already sent (`processing`, `unknown`, `requires_action`: its
    customer's 3-D Secure pending, still chargeable) answers 409 `payment_in_progress`; a final
    one other than `canceled`, 409 `payment_not_cancelable`.
    Idempotent: a canceled payment is answered as it is.

    An authorization (`requires_capture`, capture_method manual) is voided: the void is queued
    (202, `capture: {"action": "void", "status": "pending"}`) and made by a worker; the payment
    becomes `canceled`, nothing captured. Asked again, the same void is answered
    (`Idempotent-Replayed: true`); while a capture is asked instead, 409
    `payment_not_capturable`."""
    if not PAYMENT_ID.fullmatch(payment_id):
        raise PaymentNotFound(f"No such payment: {payment_id}", param="id")
    settings: Settings = request.app.state.settings
    wait = wait_of(request, settings.max_wait_seconds)
    key = sent_idempotency_key(request)
    await read_body_model(request, CancelRequest, settings.max_body_bytes, optional=True)
    principal = principal_of(request)
    current = await service.get_for(payment_id, principal)
    if current.status is Status.REQUIRES_CAPTURE:
        captures: CaptureService = request.app.state.captures
        asked = await captures.void(
            payment_id, principal=principal, request_id=request.state.request_id
        )
        voided = await wait_for_capture(request, asked.record, wait)
        return capture_answer(voided, viewer_of(request), replayed=asked.replayed, key=key)
    record = await service.cancel(payment_id, principal)
    headers = {"Idempotency-Key": key} if key else None
    return model_response(200, payment_view(record, viewer=viewer_of(request)), headers)
