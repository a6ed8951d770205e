"""Charging one payment: the logic behind the ``payments.charge`` task, testable without Celery.

The rules, as they hold now:
1. At most one charge. Every Stripe write for a payment carries the same idempotency key
   (``{payment_id}:charge``; the payment id derives from the client's Idempotency-Key, so the
   key survives even a loss of Redis), and the payment method is resolved once and stored, so
   a retry sends Stripe the very same request. One worker at a time holds the payment (a lease
   in Redis, kept alive while it waits and expiring if it dies).
2. An unknown outcome is reconciled before any new attempt. Whenever an earlier attempt may
   have reached Stripe without its answer being recorded (any retry or redelivery, a replayed
   dead letter, a key Stripe says was used with other parameters), the attempt first looks for
   a PaymentIntent carrying our payment id and adopts it. A first attempt pays nothing for
   this; a retry pays one list call.
3. "Not charged" only when known. When retries run out, Stripe is asked once more; a charge
   found is adopted, none found (Stripe answered) fails the payment as not charged and files a
   dead letter. If Stripe cannot be asked, the payment becomes ``unknown`` (code
   ``outcome_unknown``) and ``worker.reconcile`` keeps asking, with backoff, until it knows.
4. Waiting for the shared Stripe budget is not a failure: an attempt books its calls once and
   waits for them (``worker.stripe_calls``), however long the backlog.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from celery.utils.time import get_exponential_backoff_interval

from shared.errors import PaymentServiceError, UpstreamError
from shared.fleet_metrics import StripeCallMetrics, outcome_field
from shared.payments.payment_records import PaymentRecord, stripe_idempotency_key
from shared.payments.states import Status
from shared.settings.service_settings import Settings
from shared.store import BUSY, PaymentStore, Started
from shared.stripe.budget import StripeBudget
from shared.stripe.gateway import StripeGateway
from shared.stripe.outcomes import (
    ChargeOutcome,
    Settled,
    TransientStripeError,
    not_charged,
    outcome_unknown,
    settle,
)
from worker.stripe_calls import LeaseLost, MeteredStripe

log = structlog.get_logger(__name__)

LEASE_BUSY_RETRY_SECONDS = 5.0
PROCESSING_RECHECK_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Not done yet: run the task again after ``countdown`` seconds."""

    reason: str
    countdown: float


@dataclass(frozen=True, slots=True)
class Done:
    status: Status | None  # None: nothing to do (unknown, expired or already final)


class ChargeProcessor:
    def __init__(
        self,
        store: PaymentStore,
        gateway: StripeGateway,
        settings: Settings,
        budget: StripeBudget | None = None,
        metrics: StripeCallMetrics | None = None,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._settings = settings
        self._budget = budget or StripeBudget(store, 0)
        self._metrics = metrics

    def process(self, payment_id: str, *, delivery_tag: str | None = None) -> Done | RetryLater:
        # The delivery's own tag: if Redis drops out mid-attempt, the same delivery starts
        # again under the lease it already holds instead of waiting for it to expire.
        token = delivery_tag or secrets.token_hex(8)
        started = self._store.start_attempt(payment_id, token=token)
        if started is BUSY:
            log.info("charge.leased_elsewhere", payment_id=payment_id)
            return RetryLater("another worker holds this payment", LEASE_BUSY_RETRY_SECONDS)
        if not isinstance(started, Started):
            log.info("charge.skipped", payment_id=payment_id, reason="gone_or_final")
            return Done(None)
        record = started.record
        bound = log.bind(payment_id=payment_id, idempotency_key=record.idempotency_key,
                         attempt=record.attempts)  # fmt: skip
        bound.info("charge.started")
        stripe = MeteredStripe(
            self._budget,
            self._metrics,
            keepalive=lambda: self._store.heartbeat(
                payment_id, token=token, delivery_tag=delivery_tag
            ),
        )
        try:
            intent = self._charge(record, stripe)
        except LeaseLost:
            bound.warning("charge.lease_lost")
            return Done(None)
        except TransientStripeError as exc:
            if record.attempts > self._settings.charge_max_retries:
                return self._give_up(record, stripe, bound)
            countdown = self._backoff(record.attempts, exc.retry_after)
            bound.info("charge.retry", reason=str(exc), countdown=round(countdown, 2))
            self._store.release(payment_id, token=token)
            return RetryLater(str(exc), countdown)
        except PaymentServiceError as exc:
            bound.info("charge.failed", code=exc.code, status=exc.status_code)
            return finish(self._store, record.id, Settled(Status.FAILED, exc), {})
        finally:
            stripe.flush()
        return self._settle(record, intent, token, bound)

    def _charge(self, record: PaymentRecord, stripe: MeteredStripe) -> ChargeOutcome:
        if record.payment_intent:
            # Stripe already has it (it was still processing): ask for its state.
            stripe.plan(1)
            return stripe.call("payment_intents.retrieve", self._gateway.retrieve_payment_intent,
                               payment_intent_id=record.payment_intent)  # fmt: skip
        reconcile = record.attempts > 1 or record.reconcile_first
        stripe.plan(1 + int(reconcile) + int(record.payment_method is None))
        if reconcile:
            found = self._find(record, stripe)
            if found is not None:
                return found
        method = record.payment_method
        if method is None:
            method = stripe.call("customers.retrieve", self._gateway.default_payment_method,
                                 customer=record.account_id)  # fmt: skip
            self._store.remember_payment_method(record.id, method)
        try:
            return stripe.call(
                "payment_intents.create",
                self._gateway.create_payment_intent,
                customer=record.account_id,
                amount_minor=record.amount_minor,
                currency=record.currency,
                payment_method=method,
                payment_id=record.id,
                idempotency_key=stripe_idempotency_key(record.id),
            )
        except UpstreamError as exc:
            # Stripe saw this key with other parameters: what did that request do?
            found = self._find(record, stripe) if exc.code == "idempotency_error" else None
            if found is None:
                raise
            return found

    def _find(self, record: PaymentRecord, stripe: MeteredStripe) -> ChargeOutcome | None:
        found = find_charge(self._gateway, stripe, record)
        if found is not None:
            log.info("charge.reconciled", payment_id=record.id,
                     payment_intent=found.payment_intent_id)  # fmt: skip
        return found

    def _give_up(
        self, record: PaymentRecord, stripe: MeteredStripe, bound: Any
    ) -> Done | RetryLater:
        """Retries ran out: say "not charged" only if Stripe confirms it, else "unknown"."""
        try:
            found = self._find(record, stripe)
        except (TransientStripeError, PaymentServiceError, LeaseLost) as exc:
            bound.warning("charge.outcome_unknown", reason=str(exc))
            return finish(
                self._store,
                record.id,
                Settled(Status.UNKNOWN, outcome_unknown()),
                {},
                check_at=time.time() + self._settings.reconcile_backoff_seconds,
            )
        finally:
            stripe.flush()
        if found is not None:
            return self._settle(record, found, None, bound)
        bound.warning("charge.gave_up", attempts=record.attempts)
        return finish(self._store, record.id, Settled(Status.FAILED, not_charged(record.attempts)),
                      {}, dead_letter=True)  # fmt: skip

    def _settle(
        self, record: PaymentRecord, intent: ChargeOutcome, token: str | None, bound: Any
    ) -> Done | RetryLater:
        settled = settle(intent)
        if settled.status is Status.PROCESSING and token is not None:
            self._store.release(record.id, token=token, fields=settled.fields)
            return RetryLater("payment intent still processing", PROCESSING_RECHECK_SECONDS)
        settled = settled.or_unknown()
        bound.info("charge." + settled.status.value, payment_intent=intent.payment_intent_id)
        return finish(self._store, record.id, settled, {})

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        return retry_backoff(self._settings, attempts, retry_after)


def retry_backoff(settings: Settings, attempts: int, retry_after: float | None) -> float:
    """Before a Stripe write is tried again: exponential with full jitter (Celery's own), or
    Stripe's Retry-After, capped (CHARGE_RETRY_BACKOFF_*; charges and refunds alike)."""
    cap = settings.charge_retry_backoff_max_seconds
    if retry_after is not None:
        return min(retry_after, cap)
    jittered = get_exponential_backoff_interval(
        factor=1, retries=attempts - 1, maximum=2**31, full_jitter=True
    )
    return float(min(cap, jittered * settings.charge_retry_backoff_seconds))


def finish(
    store: PaymentStore,
    payment_id: str,
    settled: Settled,
    fields: dict[str, str],
    *,
    dead_letter: bool = False,
    check_at: float = 0,
) -> Done:
    """Record a settled outcome with its fields and its error (if any); a success clears an
    earlier error."""
    error = settled.error
    store.finish(
        payment_id,
        status=settled.status,
        fields={**settled.record_fields, **fields},
        outcome_field=outcome_field(settled.status.value, error.code if error else None),
        dead_letter=dead_letter,
        clear=settled.record_clear,
        check_at=check_at,
    )
    return Done(settled.status)


def find_charge(
    gateway: StripeGateway, stripe: MeteredStripe, record: PaymentRecord
) -> ChargeOutcome | None:
    """The PaymentIntent that already charged this payment, if Stripe has one."""
    return stripe.call(
        "charges.list",
        gateway.find_payment_intent,
        customer=record.account_id,
        payment_id=record.id,
        created_after=epoch_seconds(record.created_at) - 60,
    )


def epoch_seconds(iso: str) -> int:
    """Seconds since the epoch of an ISO timestamp of a record."""
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
