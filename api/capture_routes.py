"""``POST /payments/{id}/capture``: capture an authorized payment (``capture_method: manual``).

The logic is ``api.capture_service.CaptureService``; a route reads the request and writes the
answer. A void is the cancel route's (``POST /payments/{id}/cancel``) for an authorization.
"""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from api import scopes
from api.capture_answers import capture_answer, wait_for_capture
from api.capture_service import CaptureService
from api.error_responses import FIELD_HINTS
from api.operation_docs import (
    BY_WHAT_IT_ASKS,
    error_responses,
    idempotency_key_parameter,
    operation_answers,
    read_by_hand,
    wait_parameter,
)
from api.request_helpers import (
    principal_of,
    read_body_model,
    sent_idempotency_key,
    viewer_of,
    wait_of,
)
from api.schemas import CaptureRequest, Payment
from shared.errors import (
    AuthorizationReleased,
    InvalidRequest,
    PayloadTooLarge,
    PaymentNotCapturable,
    PaymentNotFound,
    StoreUnavailable,
    StripeUnavailable,
    UnsupportedMediaType,
    UpstreamError,
)
from shared.settings.service_settings import Settings

router = scopes.guarded_router("payments")


@router.post(
    "/payments/{payment_id}/capture",
    operation_id="capture_payment",
    status_code=202,
    response_model=None,
    responses={
        **operation_answers(
            Payment,
            "Captured within `wait` seconds.",
            "Accepted (`capture.status` pending); poll Location for the outcome.",
        ),
        **error_responses(
            InvalidRequest(FIELD_HINTS["amount"], code="amount_invalid", param="amount"),
            InvalidRequest(
                "amount may be at most the amount authorized, 42.99 usd.",
                code="amount_too_large",
                param="amount",
            ),
            PaymentNotFound(param="id"),
            PaymentNotCapturable,
            AuthorizationReleased,
            PayloadTooLarge,
            UnsupportedMediaType,
            UpstreamError,
            StripeUnavailable,
            StoreUnavailable,
        ),
    },
    openapi_extra=read_by_hand(
        idempotency_key_parameter(BY_WHAT_IT_ASKS),
        wait_parameter(
            "Seconds to wait for Stripe's answer (0 to MAX_WAIT_SECONDS): 200 once captured, "
            "the error's status once failed, 202 if still pending by then."
        ),
        body=CaptureRequest,
        body_required=False,  # no body: capture all of it
    ),
)
async def capture_payment(request: Request, payment_id: str) -> Response:
    """Capture an authorized payment (``requires_capture``), all of it or ``amount``: the
    capture is queued (``capture.status`` pending) and made by a worker; the payment becomes
    ``succeeded`` with ``amount_captured``. The same request again answers the same capture
    (``Idempotent-Replayed: true``); another capture or a void of the same authorization is a
    409, as is a capture of a payment that is not an authorization."""
    settings: Settings = request.app.state.settings
    captures: CaptureService = request.app.state.captures
    wait = wait_of(request, settings.max_wait_seconds)
    key = sent_idempotency_key(request)
    asked = await read_body_model(request, CaptureRequest, settings.max_body_bytes, optional=True)
    result = await captures.capture(
        payment_id,
        amount=asked.amount,
        principal=principal_of(request),
        request_id=request.state.request_id,
    )
    record = await wait_for_capture(request, result.record, wait)
    return capture_answer(record, viewer_of(request), replayed=result.replayed, key=key)
