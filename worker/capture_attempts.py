"""Captures and voids of authorizations: the logic behind ``payments.capture``.

A payment made with ``capture_method: manual`` ends ``requires_capture``: Stripe holds the
amount on the card. ``POST /payments/{id}/capture`` asks to take it (all, or part: Stripe
releases the rest), ``POST /payments/{id}/cancel`` to void it; either is written on the
payment's record (``capture_*``) and made here, under the rules of charges and refunds, kept by
the same skeleton (worker.attempts):
1. At most one capture or void a request. Every Stripe write carries the same idempotency key
   (``{payment_id}:capture`` or ``{payment_id}:void``; a new capture asked after one failed is
   ``…:capture:2``), and one worker at a time holds it (a lease of its own, apart from the
   charge's).
2. Reconciled before any retry. Retrieving the PaymentIntent tells whether an earlier attempt
   captured or voided it: still requires_capture, nothing happened; captured (succeeded) or
   released (canceled), that is adopted.
3. "Not captured" only when known. When retries run out, Stripe is asked once more; if it
   cannot be asked, the capture is ``unknown`` (the payment stays requires_capture, no other
   capture or void is taken) and the maintenance round (``CaptureProcessor.reconcile_round``)
   keeps asking until it knows.
What a PaymentIntent means for the payment (its status and fields) is the one map,
``shared.stripe.outcomes.settle``; what it means for the capture or void asked is here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.errors import (
    AlreadyCaptured,
    AuthorizationReleased,
    InvalidRequest,
    PaymentServiceError,
    StripeUnavailable,
    UpstreamError,
)
from shared.fleet_metrics import StripeCallMetrics
from shared.payments.payment_records import PaymentRecord, capture_idempotency_key, now_iso
from shared.payments.states import CaptureStatus, Status
from shared.settings.service_settings import Settings
from shared.store import BUSY, Busy
from shared.store.capture_store import CaptureStore
from shared.stripe.budget import StripeBudget
from shared.stripe.gateway import StripeGateway
from shared.stripe.outcomes import ChargeOutcome, settle
from worker.attempts import Attempts, Done, Verdict
from worker.stripe_calls import MeteredStripe
from worker.stripe_events import AUTHORIZATION_STAMPS

CAPTURE, VOID = "capture", "void"
_ERROR_FIELDS = ("capture_error", "capture_error_status")

# The callback task message for a payment's move (see worker.callback_delivery).
PaymentCallback = Callable[[str, Status], bytes]


@dataclass(frozen=True, slots=True)
class HeldCapture:
    """A payment under its capture's lease, with the capture or void asked of it."""

    record: PaymentRecord

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def action(self) -> str:
        return self.record.capture_action or CAPTURE

    @property
    def attempts(self) -> int:
        return self.record.capture_attempts

    @property
    def reconcile_attempts(self) -> int:
        return self.record.capture_reconcile_attempts

    @property
    def stripe_key(self) -> str:
        return capture_idempotency_key(self.id, self.action, self.record.capture_seq)


@dataclass(frozen=True, slots=True)
class CaptureVerdict(Verdict[CaptureStatus]):
    """A capture's or void's verdict, and where the PaymentIntent takes its payment."""

    to: Status | None = None
    payment_fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CaptureOutcome:
    """The PaymentIntent as Stripe has it, and the action asked of it (what it means depends
    on both)."""

    action: str
    intent: ChargeOutcome


class CaptureProcessor(Attempts[HeldCapture, CaptureOutcome, CaptureStatus]):
    name = "capture"
    noun = "payment"
    in_flight = "capture pending at Stripe"
    retrieve_call = "payment_intents.retrieve"
    find_call = "payment_intents.retrieve"  # the PaymentIntent itself says what happened
    write_call = "payment_intents.capture"

    def __init__(
        self,
        store: CaptureStore,
        gateway: StripeGateway,
        settings: Settings,
        budget: StripeBudget,
        metrics: StripeCallMetrics | None = None,
        callback_for: PaymentCallback | None = None,
    ) -> None:
        super().__init__(settings, budget, metrics)
        self._store = store
        self._gateway = gateway
        self._callback_for = callback_for or (lambda payment_id, status: b"")

    def _start(self, key: str, *, token: str) -> HeldCapture | Busy | None:
        started = self._store.start(key, token=token)
        if started == "busy":
            return BUSY
        return HeldCapture(started) if isinstance(started, PaymentRecord) else None

    def _hold(self, key: str, *, token: str) -> HeldCapture | None:
        started = self._store.start(key, token=token, count=False)
        return HeldCapture(started) if isinstance(started, PaymentRecord) else None

    def _due_unknown(self, *, limit: int) -> list[str]:
        return self._store.due_unknown(limit=limit)

    def _keepalive(
        self, held: HeldCapture, token: str, delivery_tag: str | None
    ) -> Callable[[], bool]:
        return lambda: True

    def _log_fields(self, held: HeldCapture) -> dict[str, Any]:
        return {"payment_id": held.id, "action": held.action,
                "idempotency_key": held.record.idempotency_key}  # fmt: skip

    def _at_stripe(self, held: HeldCapture) -> bool:
        return False  # the PaymentIntent is retrieved whenever an earlier attempt may count

    def _retrieve(self, held: HeldCapture, stripe: MeteredStripe) -> CaptureOutcome:
        intent = stripe.call("payment_intents.retrieve", self._gateway.retrieve_payment_intent,
                             payment_intent_id=held.record.payment_intent)  # fmt: skip
        return CaptureOutcome(held.action, intent)

    def _find(self, held: HeldCapture, stripe: MeteredStripe) -> CaptureOutcome | None:
        """The PaymentIntent if an earlier attempt (or anyone) captured or released it; None
        while it still awaits its capture: nothing happened."""
        found = self._retrieve(held, stripe)
        return None if found.intent.status == Status.REQUIRES_CAPTURE.value else found

    def _write(self, held: HeldCapture, stripe: MeteredStripe) -> CaptureOutcome:
        intent_id = held.record.payment_intent
        if intent_id is None:
            raise InvalidRequest("The payment has no authorization.", code="payment_not_capturable")
        try:
            if held.action == VOID:
                intent = stripe.call("payment_intents.cancel",
                                     self._gateway.cancel_payment_intent,
                                     payment_intent_id=intent_id,
                                     idempotency_key=held.stripe_key)  # fmt: skip
            else:
                intent = stripe.call("payment_intents.capture",
                                     self._gateway.capture_payment_intent,
                                     payment_intent_id=intent_id,
                                     amount_minor=held.record.capture_amount_minor,
                                     idempotency_key=held.stripe_key)  # fmt: skip
        except InvalidRequest as exc:
            if exc.code != "payment_intent_unexpected_state":
                raise
            # Captured or released already: what the PaymentIntent says is the outcome.
            return self._retrieve(held, stripe)
        return CaptureOutcome(held.action, intent)

    def _stripe_ids(self, outcome: CaptureOutcome) -> dict[str, str]:
        return {"payment_intent": outcome.intent.payment_intent_id}

    def _verdict(self, outcome: CaptureOutcome) -> CaptureVerdict:
        return capture_verdict(outcome.action, outcome.intent)

    def _record(self, held: HeldCapture, verdict: Verdict[CaptureStatus]) -> Done[CaptureStatus]:
        assert verdict.status is not None
        to = verdict.to if isinstance(verdict, CaptureVerdict) else None
        moves = verdict.payment_fields if isinstance(verdict, CaptureVerdict) else {}
        return self._finish(held, verdict.status, verdict.error, verdict.fields, to=to,
                            payment_fields=moves)  # fmt: skip

    def _write_call(self, held: HeldCapture) -> str:
        return "payment_intents.cancel" if held.action == VOID else self.write_call

    def _release(
        self, held: HeldCapture, token: str, fields: dict[str, str], *, uncount: bool = False
    ) -> None:
        self._store.release(held.id, token=token, fields=fields, uncount=uncount)

    def _failed(self, held: HeldCapture, error: PaymentServiceError) -> Done[CaptureStatus]:
        return self._finish(held, CaptureStatus.FAILED, error, {})

    def _not_done(self, held: HeldCapture) -> Done[CaptureStatus]:
        return self._finish(held, CaptureStatus.FAILED, not_captured(held), {})

    def _unknown(
        self, held: HeldCapture, seen: Verdict[CaptureStatus], *, check_at: float
    ) -> Done[CaptureStatus]:
        return self._finish(held, CaptureStatus.UNKNOWN, None, seen.fields, check_at=check_at)

    def _postpone(self, held: HeldCapture, token: str, *, check_at: float) -> None:
        looks = {"capture_reconcile_attempts": str(held.reconcile_attempts + 1)}
        self._finish(held, CaptureStatus.UNKNOWN, None, looks, check_at=check_at)

    def _finish(
        self,
        held: HeldCapture,
        status: CaptureStatus,
        error: PaymentServiceError | None,
        fields: dict[str, str],
        *,
        to: Status | None = None,
        payment_fields: dict[str, str] | None = None,
        check_at: float = 0,
    ) -> Done[CaptureStatus]:
        """Record the capture's or void's outcome, and the payment's move, in one step; a
        success clears an earlier error."""
        if error is not None:
            fields = {**fields, "capture_error": orjson.dumps(error.to_dict()).decode(),
                      "capture_error_status": str(error.status_code)}  # fmt: skip
        self._store.finish(
            held.id,
            status=status,
            fields=fields,
            clear=() if error is not None else _ERROR_FIELDS,
            to=to,
            payment_fields=payment_fields,
            callback=self._callback_for(held.id, to) if to is not None else b"",
            check_at=check_at,
        )
        return Done(status)


def capture_verdict(action: str, intent: ChargeOutcome) -> CaptureVerdict:
    """What a PaymentIntent, retrieved or answered, means for the capture or void asked:
    None while it still awaits its capture (or Stripe is at it); the payment's move through
    ``settle``, the one PaymentIntent map."""
    settled = settle(intent)
    if settled.status in (Status.REQUIRES_CAPTURE, Status.PROCESSING):
        return CaptureVerdict(None)
    moves = dict(settled.record_fields)
    if settled.status in AUTHORIZATION_STAMPS:
        moves[AUTHORIZATION_STAMPS[settled.status]] = now_iso()
    done = (Status.SUCCEEDED if action == CAPTURE else Status.CANCELED) is settled.status
    if done:
        return CaptureVerdict(CaptureStatus.SUCCEEDED, to=settled.status, payment_fields=moves)
    error: PaymentServiceError
    if settled.status is Status.CANCELED:
        reason = intent.cancellation_reason or "voided"
        error = AuthorizationReleased(
            f"The authorization was released ({reason}) before the capture: nothing was captured."
        )
    elif settled.status is Status.SUCCEEDED:
        error = AlreadyCaptured()
    else:
        error = UpstreamError(f"Unexpected PaymentIntent status {intent.status}.")
        return CaptureVerdict(CaptureStatus.FAILED, error)
    return CaptureVerdict(CaptureStatus.FAILED, error, to=settled.status, payment_fields=moves)


def not_captured(held: HeldCapture) -> PaymentServiceError:
    """Retries ran out and the PaymentIntent still awaits its capture: only then is this said."""
    what = "captured" if held.action == CAPTURE else "voided"
    return StripeUnavailable(
        f"The payment processor could not be reached after {held.attempts} attempts, and the "
        f"authorization was not {what}: it still holds. Ask again later.",
        code="stripe_unavailable",
    )
