"""Refunds: the ones clients ask for (the logic behind ``payments.refund``) and the ones Stripe
reports (``charge.refunded``, a dashboard refund included).

The rules, those of charges (worker.charge), kept by the same skeleton (worker.attempts):
1. At most one refund per request. Every Stripe write for a refund carries the same
   idempotency key (``{refund_id}:refund``; the refund id derives from the client and its
   Idempotency-Key), and one worker at a time holds the refund (a lease in Redis).
2. Reconciled before any retry. Whenever an earlier attempt may have reached Stripe (any retry
   or redelivery), the attempt first lists the charge's refunds for one carrying our refund id
   in its metadata and adopts it.
3. "Not refunded" only when known. When retries run out, Stripe is asked once more: a refund
   found is adopted, none found (Stripe answered) fails the refund and gives its amount back
   to the payment. If Stripe cannot be asked, the refund is ``unknown``, its amount stays held,
   and the maintenance round (``RefundProcessor.reconcile_round``) keeps asking until it knows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from shared.errors import InvalidRequest, PaymentServiceError, StripeUnavailable
from shared.fleet_metrics import StripeCallMetrics
from shared.payments.refund_records import RefundRecord, refund_idempotency_key
from shared.payments.states import RefundStatus, Status
from shared.settings.service_settings import Settings
from shared.store import BUSY, Busy
from shared.store.lifecycle_store import LifecycleStore
from shared.store.refund_store import RefundStarted, RefundStore
from shared.stripe.budget import StripeBudget
from shared.stripe.gateway import StripeGateway
from shared.stripe.outcomes import RefundOutcome, refund_settled
from worker.attempts import Attempts, Done, Verdict
from worker.stripe_calls import MeteredStripe

log = structlog.get_logger(__name__)

# The callback task messages of a refund's outcome: (the refund's, the payment's if it became
# refunded); empty when there is no callback (see worker.callback_delivery).
RefundCallbacks = Callable[[RefundRecord, RefundStatus], tuple[bytes, bytes]]


def _no_callbacks(record: RefundRecord, status: RefundStatus) -> tuple[bytes, bytes]:
    return (b"", b"")


@dataclass(frozen=True, slots=True)
class HeldRefund:
    """A refund under its lease, with the charge it refunds (None: the payment has none)."""

    record: RefundRecord
    charge: str | None

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def attempts(self) -> int:
        return self.record.attempts

    @property
    def reconcile_attempts(self) -> int:
        return self.record.reconcile_attempts


class RefundProcessor(Attempts[HeldRefund, RefundOutcome, RefundStatus]):
    name = "refund"
    noun = "refund"
    in_flight = "refund pending at Stripe"
    retrieve_call = "refunds.retrieve"
    find_call = "refunds.list"
    write_call = "refunds.create"

    def __init__(
        self,
        refunds: RefundStore,
        payments: LifecycleStore,
        gateway: StripeGateway,
        settings: Settings,
        budget: StripeBudget | None = None,
        metrics: StripeCallMetrics | None = None,
        callbacks: RefundCallbacks = _no_callbacks,
    ) -> None:
        super().__init__(settings, budget or StripeBudget.off(), metrics)
        self._refunds = refunds
        self._payments = payments
        self._gateway = gateway
        self._callbacks = callbacks

    def _held(self, started: RefundStarted | str) -> HeldRefund | None:
        if not isinstance(started, RefundStarted):
            return None
        payment = self._payments.get(started.record.payment_id)
        charge = payment.charge if payment is not None else None
        return HeldRefund(started.record, charge or None)

    def _start(self, key: str, *, token: str) -> HeldRefund | Busy | None:
        started = self._refunds.start(key, token=token)
        return BUSY if started == "busy" else self._held(started)

    def _hold(self, key: str, *, token: str) -> HeldRefund | None:
        return self._held(self._refunds.start(key, token=token, count=False))

    def _due_unknown(self, *, limit: int) -> list[str]:
        return self._refunds.due_unknown(limit=limit)

    def _keepalive(
        self, held: HeldRefund, token: str, delivery_tag: str | None
    ) -> Callable[[], bool]:
        return lambda: True

    def _log_fields(self, held: HeldRefund) -> dict[str, Any]:
        return {"refund_id": held.id, "payment_id": held.record.payment_id,
                "idempotency_key": held.record.idempotency_key}  # fmt: skip

    def _at_stripe(self, held: HeldRefund) -> bool:
        return bool(held.record.stripe_refund)  # it was pending

    def _retrieve(self, held: HeldRefund, stripe: MeteredStripe) -> RefundOutcome:
        return stripe.call("refunds.retrieve", self._gateway.retrieve_refund,
                           stripe_refund_id=held.record.stripe_refund)  # fmt: skip

    def _find(self, held: HeldRefund, stripe: MeteredStripe) -> RefundOutcome | None:
        if held.charge is None:  # nothing was charged, so nothing can have been refunded
            return None
        return stripe.call("refunds.list", self._gateway.find_refund,
                           charge_id=held.charge, refund_id=held.id)  # fmt: skip

    def _write(self, held: HeldRefund, stripe: MeteredStripe) -> RefundOutcome:
        if held.charge is None:
            raise InvalidRequest("The payment has no charge to refund.", code="charge_missing")
        return stripe.call(
            "refunds.create",
            self._gateway.create_refund,
            charge_id=held.charge,
            amount_minor=held.record.amount_minor,
            refund_id=held.id,
            payment_id=held.record.payment_id,
            idempotency_key=refund_idempotency_key(held.id),
        )

    def _stripe_ids(self, outcome: RefundOutcome) -> dict[str, str]:
        return {"stripe_refund": outcome.id}

    def _verdict(self, outcome: RefundOutcome) -> Verdict[RefundStatus]:
        status, error = refund_settled(outcome)
        fields = {"stripe_refund": outcome.id}
        if status == "pending":
            return Verdict(None, None, fields)
        return Verdict(RefundStatus(status), error, fields)

    def _release(
        self, held: HeldRefund, token: str, fields: dict[str, str], *, uncount: bool = False
    ) -> None:
        self._refunds.release(held.id, token=token, fields=fields, uncount=uncount)

    def _record(self, held: HeldRefund, verdict: Verdict[RefundStatus]) -> Done[RefundStatus]:
        assert verdict.status is not None
        return self._finish(held, verdict.status, verdict.error, verdict.fields)

    def _failed(self, held: HeldRefund, error: PaymentServiceError) -> Done[RefundStatus]:
        return self._finish(held, RefundStatus.FAILED, error, {})

    def _not_done(self, held: HeldRefund) -> Done[RefundStatus]:
        return self._finish(held, RefundStatus.FAILED, not_refunded(held.attempts), {})

    def _unknown(
        self, held: HeldRefund, seen: Verdict[RefundStatus], *, check_at: float
    ) -> Done[RefundStatus]:
        return self._finish(held, RefundStatus.UNKNOWN, None, seen.fields, check_at=check_at)

    def _postpone(self, held: HeldRefund, token: str, *, check_at: float) -> None:
        looks = {"reconcile_attempts": str(held.reconcile_attempts + 1)}
        self._finish(held, RefundStatus.UNKNOWN, None, looks, check_at=check_at)

    def _finish(
        self,
        held: HeldRefund,
        status: RefundStatus,
        error: PaymentServiceError | None,
        fields: dict[str, str],
        *,
        check_at: float = 0,
    ) -> Done[RefundStatus]:
        """Record where the refund stands and what it does to its payment (the hold given back
        or refunded), with its callbacks, in one step; a success clears an earlier error."""
        record = held.record
        if error is not None:
            fields = {**fields, "error": orjson.dumps(error.to_dict()).decode(),
                      "error_status": str(error.status_code)}  # fmt: skip
        written = self._refunds.finish(
            record,
            status=status,
            fields=fields,
            clear=() if error is not None else ("error", "error_status"),
            callbacks=self._callbacks(record, status),
            check_at=check_at,
        )
        if written == 2:
            log.info("payment.moved", payment_id=record.payment_id, status=Status.REFUNDED.value)
        return Done(status)


def not_refunded(attempts: int) -> PaymentServiceError:
    """Retries ran out and Stripe holds no refund of ours: only then is this said."""
    return StripeUnavailable(
        f"The payment processor could not be reached after {attempts} attempts, and it holds "
        "no such refund: nothing was refunded. Retry later with a new Idempotency-Key.",
        code="stripe_unavailable",
    )


def apply_stripe_refunded(
    store: LifecycleStore,
    payment_id: str,
    stripe_refunded_minor: int,
    callback_for: Callable[[str, Status], bytes],
) -> str:
    """Record Stripe's amount_refunded for the payment (a dashboard refund shows up here); the
    payment becomes ``refunded`` once the whole amount is."""
    result = store.record_stripe_refunds(
        payment_id,
        stripe_refunded_minor=stripe_refunded_minor,
        callback=callback_for(payment_id, Status.REFUNDED),
    )
    if result == 2:
        log.info("payment.moved", payment_id=payment_id, status=Status.REFUNDED.value)
    return {-1: "not_ours", 0: "unchanged", 1: "applied", 2: "applied"}[result]
