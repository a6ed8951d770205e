"""Refunds in the API: claim one against its payment and enqueue it, and find a client's refunds.

Accepting a refund is one Redis step (``AsyncRefundStore.claim``): the refund id derives from
the client and its Idempotency-Key (a replay finds the same refund; another body is a 422), and
the amount is checked against what is left of the charge and held in the same script that
writes the refund and enqueues its task, so concurrent refunds never exceed the charge. No
Stripe call here: ``payments.refund`` (worker.refund_attempts) makes it. A client sees the
refunds of the payments it sees (``PaymentService.get_for``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import structlog

from api.schemas import RefundRequest
from api.service import PaymentService
from shared.celery_message import task_message
from shared.errors import (
    IdempotencyKeyMismatch,
    InvalidRequest,
    PaymentNotFound,
    PaymentNotRefundable,
    RefundExceedsCharge,
    RefundNotFound,
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
from shared.settings.api_clients import ANONYMOUS, Client
from shared.settings.service_settings import Settings
from shared.store.refund_store import AsyncRefundStore, RefundClaim

log = structlog.get_logger(__name__)

_REFUND_ID = re.compile(r"ref_[0-9a-f]{24}")


@dataclass(frozen=True, slots=True)
class AcceptedRefund:
    record: RefundRecord
    replayed: bool


class RefundService:
    def __init__(
        self, store: AsyncRefundStore, settings: Settings, payments: PaymentService
    ) -> None:
        self._store = store
        self._settings = settings
        self._payments = payments

    async def accept(
        self,
        request: RefundRequest,
        *,
        payment_id: str,
        idempotency_key: str,
        principal: Client | None,
        request_id: str,
    ) -> AcceptedRefund:
        """Refund a succeeded payment the client sees, all of what is left or ``amount`` of
        it: claim the Idempotency-Key and the amount, enqueue the Stripe refund."""
        payment = await self._payments.get_for(payment_id, principal)
        amount: int | None = None
        if request.amount is not None:
            try:
                amount = parse_refund_amount(request.amount, payment.currency)
            except AmountError as exc:
                raise InvalidRequest(str(exc), code="amount_invalid", param="amount") from exc
        client = (principal or ANONYMOUS).name
        refund_id = refund_id_for(
            secret=self._settings.payment_id_key, client=client, idempotency_key=idempotency_key
        )
        fingerprint = refund_fingerprint(payment_id=payment_id, amount_minor=amount)
        created = now_iso()
        enqueued_at = int(time.time() * 1000)
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
            "enqueued_at": str(enqueued_at),  # the recovery sweep's reference
        }
        message = task_message(
            task_name=REFUND_TASK,
            task_id=refund_id,
            args=(refund_id,),
            queue=self._settings.queue_name,
            headers={"request_id": request_id, "enqueued_at": enqueued_at},
        )
        claim = await self._store.claim(
            refund_id=refund_id, payment_id=payment_id, amount_minor=amount,
            fields=fields, message=message,
        )  # fmt: skip
        refund = _claimed(claim, payment)
        if not claim.created and refund.fingerprint != fingerprint:
            raise IdempotencyKeyMismatch(
                "This Idempotency-Key was already used with a different refund request; use a "
                "new key for a new refund.",
                param="Idempotency-Key",
                refund_id=refund.id,
            )
        (log.info if not claim.created else log.debug)(
            "refund.replayed" if not claim.created else "refund.accepted",
            refund_id=refund.id, payment_id=payment_id, idempotency_key=idempotency_key,
        )  # fmt: skip
        return AcceptedRefund(refund, replayed=not claim.created)

    async def get(self, refund_id: str) -> RefundRecord:
        refund = await self._store.get(refund_id)
        if refund is None:
            raise RefundNotFound(f"No such refund: {refund_id}", param="refund_id")
        return refund

    async def get_for(
        self, payment_id: str, refund_id: str, principal: Client | None
    ) -> RefundRecord:
        """A refund of a payment the client sees; any other is the 404 of no such refund."""
        await self._payments.get_for(payment_id, principal)
        if not _REFUND_ID.fullmatch(refund_id):
            raise RefundNotFound(f"No such refund: {refund_id}", param="refund_id")
        refund = await self.get(refund_id)
        if refund.payment_id != payment_id:
            raise RefundNotFound(f"No such refund: {refund_id}", param="refund_id")
        return refund


def _claimed(claim: RefundClaim, payment: PaymentRecord) -> RefundRecord:
    """The refund the claim wrote or found, or the error that says why there is none."""
    if claim.payment_missing:
        raise PaymentNotFound(f"No such payment: {payment.id}", param="id")
    if claim.not_refundable is not None:
        raise PaymentNotRefundable(
            f"Only a succeeded payment can be refunded; this one is {claim.not_refundable}.",
            payment_id=payment.id,
        )
    if claim.left_minor is not None:
        left = format_minor(claim.left_minor, payment.currency)
        raise RefundExceedsCharge(
            f"The refund would exceed the charge: {left} {payment.currency} is left to refund.",
            param="amount",
            payment_id=payment.id,
        )
    assert claim.record is not None
    return claim.record
