"""Captures and voids in the API: ask one of an authorized payment and enqueue it.

Asking is one Redis step (``AsyncCaptureStore.ask``, ``capture_accept.lua``): the capture or
void is written on the payment's record and its task pushed, all or nothing. A payment has one
capture or void at a time: the same request again replays it (``Idempotent-Replayed``),
another is a 409 ``payment_not_capturable``, as is any request for a payment that is not an
authorization; once one failed, a new one may be asked. No Stripe call here:
``payments.capture`` (worker.capture_attempts) makes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from api.service import PaymentService
from shared.errors import InvalidRequest, PaymentNotCapturable, PaymentNotFound
from shared.payments.money import AmountError, format_minor
from shared.payments.payment_records import PaymentRecord
from shared.payments.refund_records import parse_refund_amount
from shared.payments.states import Status
from shared.settings.api_clients import Client
from shared.settings.service_settings import Settings
from shared.store.capture_store import AsyncCaptureStore, capture_message

log = structlog.get_logger(__name__)

CAPTURE, VOID = "capture", "void"


@dataclass(frozen=True, slots=True)
class AskedCapture:
    record: PaymentRecord
    replayed: bool


class CaptureService:
    def __init__(
        self, store: AsyncCaptureStore, settings: Settings, payments: PaymentService
    ) -> None:
        self._store = store
        self._settings = settings
        self._payments = payments

    async def capture(
        self, payment_id: str, *, amount: str | None, principal: Client | None, request_id: str
    ) -> AskedCapture:
        """Capture the payment's authorization, all of it or ``amount`` (major units)."""
        payment = await self._payments.get_for(payment_id, principal)
        minor: int | None = None
        if amount is not None:
            try:
                minor = parse_refund_amount(amount, payment.currency)
            except AmountError as exc:
                raise InvalidRequest(str(exc), code="amount_invalid", param="amount") from exc
            # Over the authorization: only for an authorization (anything else is answered
            # 409 payment_not_capturable by the ask, whatever the amount).
            if minor > payment.amount_minor and payment.status is Status.REQUIRES_CAPTURE:
                authorized = format_minor(payment.amount_minor, payment.currency)
                raise InvalidRequest(
                    f"amount may be at most the amount authorized, {authorized} "
                    f"{payment.currency}.",
                    code="amount_too_large",
                    param="amount",
                    payment_id=payment_id,
                )
        ask = f"{CAPTURE}:{'all' if minor is None else minor}"
        return await self._ask(payment_id, CAPTURE, ask, minor, request_id)

    async def void(
        self, payment_id: str, *, principal: Client | None, request_id: str
    ) -> AskedCapture:
        """Release the payment's authorization (Stripe cancels its PaymentIntent)."""
        await self._payments.get_for(payment_id, principal)
        return await self._ask(payment_id, VOID, VOID, None, request_id)

    async def _ask(
        self, payment_id: str, action: str, ask: str, minor: int | None, request_id: str
    ) -> AskedCapture:
        message = capture_message(
            self._settings,
            payment_id,
            {"request_id": request_id, "enqueued_at": int(time.time() * 1000)},
        )
        asked = await self._store.ask(
            payment_id=payment_id, action=action, ask=ask, amount_minor=minor, message=message
        )
        if asked.missing:
            raise PaymentNotFound(f"No such payment: {payment_id}", param="id")
        if asked.not_capturable is not None:
            raise PaymentNotCapturable(
                "Only an authorized payment (requires_capture) can be captured or voided; this "
                f"one is {asked.not_capturable}.",
                payment_id=payment_id,
            )
        record = asked.record
        assert record is not None
        if not asked.created and record.capture_ask != ask:
            status = record.capture_status.value if record.capture_status else "asked"
            raise PaymentNotCapturable(
                f"This payment's authorization already has a {record.capture_action} ({status}); "
                "only the same request may be made again.",
                payment_id=payment_id,
            )
        (log.info if not asked.created else log.debug)(
            f"{action}.replayed" if not asked.created else f"{action}.accepted",
            payment_id=payment_id,
            idempotency_key=record.idempotency_key,
        )
        return AskedCapture(record, replayed=not asked.created)
