"""Refunds: the ones clients ask for (the logic behind ``payments.refund``) and the ones Stripe
reports (``charge.refunded``, a dashboard refund included).

The rules, those of charges (worker.charge):
1. At most one refund per request. Every Stripe write for a refund carries the same
   idempotency key (``{refund_id}:refund``; the refund id derives from the client and its
   Idempotency-Key), and one worker at a time holds the refund (a lease in Redis).
2. Reconciled before any retry. Whenever an earlier attempt may have reached Stripe (any retry
   or redelivery), the attempt first lists the charge's refunds for one carrying our refund id
   in its metadata and adopts it.
3. "Not refunded" only when known. When retries run out, Stripe is asked once more: a refund
   found is adopted, none found (Stripe answered) fails the refund and gives its amount back
   to the payment. If Stripe cannot be asked, the refund is ``unknown``, its amount stays held,
   and the maintenance round (``reconcile_refunds``) keeps asking until it knows.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import structlog

from shared.errors import InvalidRequest, PaymentServiceError
from shared.fleet_metrics import StripeCallMetrics
from shared.payments.refund_records import RefundRecord, refund_idempotency_key
from shared.payments.states import RefundStatus, Status
from shared.settings.service_settings import Settings
from shared.store.lifecycle_store import LifecycleStore
from shared.store.refund_store import RefundStarted, RefundStore
from shared.stripe.budget import StripeBudget
from shared.stripe.gateway import StripeGateway
from shared.stripe.outcomes import RefundOutcome, TransientStripeError, refund_settled
from worker.charge import retry_backoff
from worker.stripe_calls import MeteredStripe

log = structlog.get_logger(__name__)

LEASE_BUSY_RETRY_SECONDS = 5.0
PENDING_RECHECK_SECONDS = 2.0
RECONCILE_BATCH = 20

# The callback task messages of a refund's outcome: (the refund's, the payment's if it became
# refunded); empty when there is no callback (see worker.callback_delivery).
RefundCallbacks = Callable[[RefundRecord, RefundStatus], tuple[bytes, bytes]]


def _no_callbacks(record: RefundRecord, status: RefundStatus) -> tuple[bytes, bytes]:
    return (b"", b"")


@dataclass(frozen=True, slots=True)
class RefundRetry:
    reason: str
    countdown: float


@dataclass(frozen=True, slots=True)
class RefundDone:
    status: RefundStatus | None  # None: nothing to do (gone or already final)


class RefundProcessor:
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
        self._refunds = refunds
        self._payments = payments
        self._gateway = gateway
        self._settings = settings
        self._budget = budget or StripeBudget(refunds_booker(), 0)
        self._metrics = metrics
        self._callbacks = callbacks

    def process(self, refund_id: str) -> RefundDone | RefundRetry:
        token = secrets.token_hex(8)
        started = self._refunds.start(refund_id, token=token)
        if started == "busy":
            return RefundRetry("another worker holds this refund", LEASE_BUSY_RETRY_SECONDS)
        if not isinstance(started, RefundStarted):
            log.info("refund.skipped", refund_id=refund_id, reason="gone_or_final")
            return RefundDone(None)
        record = started.record
        bound = log.bind(
            refund_id=refund_id,
            payment_id=record.payment_id,
            idempotency_key=record.idempotency_key,
            attempt=record.attempts,
        )
        bound.info("refund.started")
        payment = self._payments.get(record.payment_id)
        if payment is None or not payment.charge:
            error = InvalidRequest("The payment has no charge to refund.", code="charge_missing")
            return self._finish(record, RefundStatus.FAILED, error, None)
        stripe = MeteredStripe(self._budget, self._metrics, keepalive=lambda: True)
        try:
            outcome = self._refund(record, payment.charge, stripe)
        except TransientStripeError as exc:
            if record.attempts > self._settings.charge_max_retries:
                return self._give_up(record, payment.charge, stripe)
            countdown = self._backoff(record.attempts, exc.retry_after)
            bound.info("refund.retry", reason=str(exc), countdown=round(countdown, 2))
            self._refunds.release(refund_id, token=token, fields={})
            return RefundRetry(str(exc), countdown)
        except PaymentServiceError as exc:
            bound.info("refund.failed", code=exc.code, status=exc.status_code)
            return self._finish(record, RefundStatus.FAILED, exc, None)
        finally:
            stripe.flush()
        return self._settle(record, outcome, token)

    def _refund(self, record: RefundRecord, charge: str, stripe: MeteredStripe) -> RefundOutcome:
        if record.stripe_refund:  # Stripe has it (it was pending): ask for its state
            return stripe.call(
                "refunds.retrieve",
                self._gateway.retrieve_refund,
                stripe_refund_id=record.stripe_refund,
            )
        if record.attempts > 1:
            found = self._find(record, charge, stripe)
            if found is not None:
                return found
        return stripe.call(
            "refunds.create",
            self._gateway.create_refund,
            charge_id=charge,
            amount_minor=record.amount_minor,
            refund_id=record.id,
            payment_id=record.payment_id,
            idempotency_key=refund_idempotency_key(record.id),
        )

    def _find(
        self, record: RefundRecord, charge: str, stripe: MeteredStripe
    ) -> RefundOutcome | None:
        found = stripe.call(
            "refunds.list", self._gateway.find_refund, charge_id=charge, refund_id=record.id
        )
        if found is not None:
            log.info("refund.reconciled", refund_id=record.id, stripe_refund=found.id)
        return found

    def _give_up(
        self, record: RefundRecord, charge: str, stripe: MeteredStripe
    ) -> RefundDone | RefundRetry:
        """Retries ran out: "not refunded" only if Stripe confirms it, else "unknown"."""
        try:
            found = self._find(record, charge, stripe)
        except (TransientStripeError, PaymentServiceError) as exc:
            log.warning("refund.outcome_unknown", refund_id=record.id, reason=str(exc))
            return self._finish(
                record,
                RefundStatus.UNKNOWN,
                None,
                None,
                check_at=time.time() + self._settings.reconcile_backoff_seconds,
            )
        if found is not None:
            return self._settle(record, found, None)
        log.warning("refund.gave_up", refund_id=record.id, attempts=record.attempts)
        return self._finish(record, RefundStatus.FAILED, not_refunded(record.attempts), None)

    def _settle(
        self, record: RefundRecord, outcome: RefundOutcome, token: str | None
    ) -> RefundDone | RefundRetry:
        status, error = refund_settled(outcome)
        if status == "pending":
            if token is not None:
                self._refunds.release(record.id, token=token, fields={"stripe_refund": outcome.id})
                return RefundRetry("refund pending at Stripe", PENDING_RECHECK_SECONDS)
            return self._finish(
                record,
                RefundStatus.UNKNOWN,
                None,
                outcome,
                check_at=time.time() + self._settings.reconcile_backoff_seconds,
            )
        return self._finish(record, RefundStatus(status), error, outcome)

    def _finish(
        self,
        record: RefundRecord,
        status: RefundStatus,
        error: PaymentServiceError | None,
        outcome: RefundOutcome | None,
        *,
        check_at: float = 0,
    ) -> RefundDone:
        return finish_refund(
            self._refunds,
            record,
            status,
            error,
            outcome,
            callbacks=self._callbacks,
            check_at=check_at,
        )

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        return retry_backoff(self._settings, attempts, retry_after)


def finish_refund(
    store: RefundStore,
    record: RefundRecord,
    status: RefundStatus,
    error: PaymentServiceError | None,
    outcome: RefundOutcome | None,
    *,
    callbacks: RefundCallbacks = _no_callbacks,
    check_at: float = 0,
) -> RefundDone:
    fields: dict[str, str] = {}
    if outcome is not None:
        fields["stripe_refund"] = outcome.id
    if error is not None:
        fields["error"] = orjson.dumps(error.to_dict()).decode()
        fields["error_status"] = str(error.status_code)
    written = store.finish(
        record,
        status=status,
        fields=fields,
        clear=() if error is not None else ("error", "error_status"),
        callbacks=callbacks(record, status),
        check_at=check_at,
    )
    if written:
        log.info(
            "refund." + status.value,
            refund_id=record.id,
            payment_id=record.payment_id,
            payment_refunded=written == 2,
        )
    return RefundDone(status)


def not_refunded(attempts: int) -> PaymentServiceError:
    """Retries ran out and Stripe holds no refund of ours: only then is this said."""
    from shared.errors import StripeUnavailable

    return StripeUnavailable(
        f"The payment processor could not be reached after {attempts} attempts, and it holds "
        "no such refund: nothing was refunded. Retry later with a new Idempotency-Key.",
        code="stripe_unavailable",
    )


def reconcile_refunds(
    refunds: RefundStore,
    payments: LifecycleStore,
    gateway: StripeGateway,
    settings: Settings,
    callbacks: RefundCallbacks = _no_callbacks,
) -> dict[str, int]:
    """One maintenance round over refunds whose outcome is unknown: found at Stripe, adopted;
    not found while Stripe answers, failed as not refunded (the amount given back); Stripe
    still unreachable, looked at again later (doubling) and the round stops."""
    counts = {"settled": 0, "postponed": 0, "skipped": 0}
    for refund_id in refunds.due_unknown(limit=RECONCILE_BATCH):
        token = secrets.token_hex(8)
        started = refunds.start(refund_id, token=token)
        if not isinstance(started, RefundStarted):
            counts["skipped"] += 1
            continue
        record = started.record
        payment = payments.get(record.payment_id)
        stripe = MeteredStripe(StripeBudget(refunds_booker(), 0), None, keepalive=lambda: True)
        try:
            found = (
                stripe.call(
                    "refunds.list",
                    gateway.find_refund,
                    charge_id=payment.charge,
                    refund_id=record.id,
                )
                if payment is not None and payment.charge
                else None
            )
        except (TransientStripeError, PaymentServiceError) as exc:
            delay = min(
                settings.reconcile_backoff_seconds * 2 ** min(record.attempts, 20),
                settings.reconcile_backoff_max_seconds,
            )
            finish_refund(
                refunds, record, RefundStatus.UNKNOWN, None, None, check_at=time.time() + delay
            )
            log.info("refund.reconcile_postponed", refund_id=refund_id, reason=str(exc))
            counts["postponed"] += 1
            break
        if found is None:
            finish_refund(
                refunds,
                record,
                RefundStatus.FAILED,
                not_refunded(record.attempts),
                None,
                callbacks=callbacks,
            )
        else:
            status, error = refund_settled(found)
            final = RefundStatus.UNKNOWN if status == "pending" else RefundStatus(status)
            finish_refund(
                refunds,
                record,
                final,
                error,
                found,
                callbacks=callbacks,
                check_at=time.time() + settings.reconcile_backoff_seconds,
            )
        counts["settled"] += 1
    return counts


class _NoBudget:
    def reserve_stripe_slots(self, *, count: int, interval_us: int) -> float:
        return 0.0


def refunds_booker() -> _NoBudget:
    """A budget booker for when no shared budget is given (the cap off)."""
    return _NoBudget()


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
