"""``POST /payments/{id}/cancel``: the one place a payment is canceled.

A payment not yet sent to Stripe ends ``canceled`` at once, never to be charged
(``PaymentService.cancel``); one already sent, or final, is decided by
``PaymentService.cancel_sent``. The route reads nothing but the id and answers the payment.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from api import scopes
from api.auth import bearer_key
from api.deps import ServiceDep
from api.operation_docs import RATE_LIMIT, error_responses, guarded_responses, read_by_hand
from api.request_helpers import PAYMENT_ID, model_response, viewer_of
from api.schemas import Payment, payment_view
from shared.errors import (
    NotDurable,
    PaymentInProgress,
    PaymentNotCancelable,
    PaymentNotFound,
    StoreUnavailable,
)

router = APIRouter(
    dependencies=[Depends(bearer_key), Depends(scopes.require("payments"))],
    responses=guarded_responses(scopes.refused("payments")),
)


@router.post(
    "/payments/{payment_id}/cancel",
    operation_id="cancel_payment",
    response_model=Payment,
    responses={
        200: {
            "description": (
                "Canceled: never sent to Stripe, never charged (also the answer to a cancel "
                "of a payment canceled already)."
            ),
            "headers": RATE_LIMIT,
        },
        **error_responses(
            PaymentNotFound,
            PaymentInProgress(payment_id="pay_3f9c2a7be1d04c55a9e1f0d2"),
            PaymentNotCancelable(
                "The payment is succeeded and can no longer be canceled.",
                payment_id="pay_3f9c2a7be1d04c55a9e1f0d2",
            ),
            NotDurable,
            StoreUnavailable,
        ),
    },
    openapi_extra=read_by_hand(),
)
async def cancel_payment(request: Request, payment_id: str, service: ServiceDep) -> Response:
    """Cancel a payment whose charge has not been sent to Stripe yet (status `queued`): it
    becomes `canceled` and is guaranteed never to be charged (a `payment.canceled` callback
    follows). A payment already sent (`processing`, `unknown`) answers 409
    `payment_in_progress`; a final one other than `canceled`, 409 `payment_not_cancelable`.
    Idempotent: a canceled payment is answered as it is."""
    if not PAYMENT_ID.fullmatch(payment_id):
        raise PaymentNotFound(f"No such payment: {payment_id}", param="id")
    record = await service.cancel(payment_id, getattr(request.state, "principal", None))
    return model_response(200, payment_view(record, viewer=viewer_of(request)))
