"""Charging one payment: the logic behind the ``payments.charge`` task, testable without Celery.

The rules:
1. At most one charge. Every Stripe write for a payment carries the same idempotency key
   (``{payment_id}:charge``; the payment id derives from the client's Idempotency-Key, so the
   key survives even a loss of Redis), and the payment method is resolved once and stored, so
   a retry sends Stripe the very same request. One worker at a time holds the payment (a lease
   in Redis, kept alive while it waits and expiring if it dies).
2. An unknown outcome is reconciled before any new attempt. Whenever an earlier attempt may
   have reached Stripe without its answer being recorded (any retry or redelivery, a replayed
   dead letter, a key Stripe says was used with other parameters), the attempt first looks for
   a PaymentIntent carrying our payment id among the customer's (whatever its status) and
   adopts it. A first attempt pays nothing for this; a retry pays one list call.
3. "Not charged" only when known. When retries run out, Stripe is asked once more; a charge
   found is adopted, none found (Stripe answered) fails the payment as not charged and files a
   dead letter. If Stripe cannot be asked, the payment becomes ``unknown`` (code
   ``outcome_unknown``) and the reconciler (``ChargeProcessor.reconcile_round``, each
   maintenance round) keeps asking, with backoff, until it knows.
4. Waiting for the shared Stripe budget is not a failure: an attempt books its calls once and
   waits for them (``worker.stripe_calls``), however long the backlog.
5. Another client's customer is never charged: with CUSTOMER_OWNER_METADATA_KEY set, the
   customer is retrieved before the PaymentIntent is made (the same call that resolves its
   default payment method) and a customer whose metadata names another client fails the
   payment ``customer_not_owned`` (403), not charged.
6. A deadline is kept before anything is sent. A payment accepted with ``expires_at`` whose
   deadline has passed when its message is taken starts no attempt (``start_attempt`` refuses
   it in the step that would take the lease) and ends ``expired``, never sent; so does one
   still queued when the maintenance round ``deadlines`` looks (``worker.maintenance``), and
   one whose first attempt's create waited for its Stripe slot (rule 4) past the deadline:
   the create is not sent (``MeteredStripe.call``'s ``not_after_ms``). Once the create has
   been sent, its answer decides, whenever it comes. A canceled payment is final: never
   attempted.

The skeleton that keeps these rules for charges and refunds alike is ``worker.attempts``; this
module is what is a charge's own: the payment's lease and record, the PaymentIntent.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from shared.errors import PaymentServiceError
from shared.fleet_metrics import StripeCallMetrics, outcome_field
from shared.payments.payment_records import PaymentRecord, stripe_idempotency_key
from shared.payments.states import Status
from shared.settings.service_settings import Settings
from shared.store import BUSY, PAST_DEADLINE, Busy, PaymentStore, Started
from shared.stripe.budget import StripeBudget
from shared.stripe.gateway import StripeGateway
from shared.stripe.outcomes import (
    ChargeOutcome,
    Settled,
    not_charged,
    outcome_unknown,
    settle,
)
from worker.attempts import Attempts, Done, Verdict
from worker.stripe_calls import MeteredStripe

log = structlog.get_logger(__name__)


class ChargeProcessor(Attempts[PaymentRecord, ChargeOutcome, Status]):
    name = "charge"
    noun = "payment"
    in_flight = "payment intent still processing"
    retrieve_call = "payment_intents.retrieve"
    find_call = "payment_intents.list"
    write_call = "payment_intents.create"

    def __init__(
        self,
        store: PaymentStore,
        gateway: StripeGateway,
        settings: Settings,
        budget: StripeBudget | None = None,
        metrics: StripeCallMetrics | None = None,
    ) -> None:
        super().__init__(settings, budget or StripeBudget.off(), metrics)
        self._store = store
        self._gateway = gateway
        # Customers may belong to a client: the customer is retrieved before each write, also
        # when the payment names its payment method.
        self._owners_checked = bool(settings.customer_owner_metadata_key)

    def _start(self, key: str, *, token: str) -> PaymentRecord | Busy | None:
        started = self._store.start_attempt(key, token=token)
        if started is BUSY:
            return BUSY
        if started is PAST_DEADLINE:
            # Rule 6: never sent, and too late to send: it ends expired, nothing to attempt.
            expired = self._store.deadlines.expire([key])
            log.info("charge.expired", payment_id=key, expired=bool(expired))
            return None
        return started.record if isinstance(started, Started) else None

    def _past_deadline(self, held: PaymentRecord, token: str) -> Done[Status]:
        # Rule 6: its first create waited for its slot past the deadline and was not sent:
        # it ends expired, in the step that gives the lease back.
        expired = self._store.deadlines.expire([held.id], token=token)
        if not expired:
            # Not as this attempt left it (its lease lost meanwhile): given back, uncounted,
            # to whichever attempt comes next.
            self._release(held, token, {}, uncount=True)
        log.info("charge.expired", payment_id=held.id, expired=bool(expired), waited=True)
        return Done(None)

    def _hold(self, key: str, *, token: str) -> PaymentRecord | None:
        held = self._store.take_lease(key, token=token)
        return held.record if isinstance(held, Started) else None

    def _due_unknown(self, *, limit: int) -> list[str]:
        return self._store.due_unknown(limit=limit)

    def _keepalive(
        self, held: PaymentRecord, token: str, delivery_tag: str | None
    ) -> Callable[[], bool]:
        return lambda: self._store.heartbeat(held.id, token=token, delivery_tag=delivery_tag)

    def _log_fields(self, held: PaymentRecord) -> dict[str, Any]:
        return {"payment_id": held.id, "idempotency_key": held.idempotency_key}

    def _reconcile_first(self, held: PaymentRecord) -> bool:
        return held.reconcile_first  # a replayed dead letter

    def _calls_before_write(self, held: PaymentRecord) -> tuple[str, ...]:
        if held.payment_method is None or self._owners_checked:
            return ("customers.retrieve",)
        return ()

    def _at_stripe(self, held: PaymentRecord) -> bool:
        return bool(held.payment_intent)  # it was still processing

    def _retrieve(self, held: PaymentRecord, stripe: MeteredStripe) -> ChargeOutcome:
        return stripe.call("payment_intents.retrieve", self._gateway.retrieve_payment_intent,
                           payment_intent_id=held.payment_intent)  # fmt: skip

    def _find(self, held: PaymentRecord, stripe: MeteredStripe) -> ChargeOutcome | None:
        return find_intent(self._gateway, stripe, held)

    def _write(self, held: PaymentRecord, stripe: MeteredStripe) -> ChargeOutcome:
        method = held.payment_method
        if method is None or self._owners_checked:
            # One read of the customer: whether it is this client's to charge, and its default
            # payment method when the payment names none.
            default = stripe.call("customers.retrieve", self._gateway.default_payment_method,
                                  customer=held.account_id, client=held.client,
                                  required=method is None)  # fmt: skip
            if method is None:
                assert default is not None  # required: PaymentMethodMissing otherwise
                method = default
                self._store.remember_payment_method(held.id, method)
        # Rule 6: a first attempt (nothing sent before it) whose slot comes past the deadline
        # sends nothing. A later one may have reached Stripe already: its answer decides.
        first = held.attempts == 1 and not held.reconcile_first
        return stripe.call(
            "payment_intents.create",
            self._gateway.create_payment_intent,
            not_after_ms=held.expires_ms if first else None,
            customer=held.account_id,
            amount_minor=held.amount_minor,
            currency=held.currency,
            payment_method=method,
            payment_id=held.id,
            idempotency_key=stripe_idempotency_key(held.id),
            client=held.client,
            description=held.description,
            metadata=held.metadata,
            capture_method=held.capture_method,
        )

    def _stripe_ids(self, outcome: ChargeOutcome) -> dict[str, str]:
        return {"payment_intent": outcome.payment_intent_id}

    def _verdict(self, outcome: ChargeOutcome) -> Verdict[Status]:
        settled = settle(outcome)
        status = None if settled.status is Status.PROCESSING else settled.status
        return Verdict(status, settled.error, dict(settled.fields), settled.clear)

    def _release(
        self, held: PaymentRecord, token: str, fields: dict[str, str], *, uncount: bool = False
    ) -> None:
        self._store.release(held.id, token=token, fields=fields, uncount=uncount)

    def _record(self, held: PaymentRecord, verdict: Verdict[Status]) -> Done[Status]:
        assert verdict.status is not None
        settled = Settled(verdict.status, verdict.error, verdict.fields, verdict.clear)
        return finish(self._store, held.id, settled, {})

    def _failed(self, held: PaymentRecord, error: PaymentServiceError) -> Done[Status]:
        return finish(self._store, held.id, Settled(Status.FAILED, error), {})

    def _not_done(self, held: PaymentRecord) -> Done[Status]:
        return finish(self._store, held.id, Settled(Status.FAILED, not_charged(held.attempts)),
                      {}, dead_letter=True)  # fmt: skip

    def _unknown(
        self, held: PaymentRecord, seen: Verdict[Status], *, check_at: float
    ) -> Done[Status]:
        settled = Settled(Status.UNKNOWN, outcome_unknown(), seen.fields, seen.clear)
        return finish(self._store, held.id, settled, {}, check_at=check_at)

    def _postpone(self, held: PaymentRecord, token: str, *, check_at: float) -> None:
        self._store.postpone_check(held.id, token=token, check_at=check_at)


def finish(
    store: PaymentStore,
    payment_id: str,
    settled: Settled,
    fields: dict[str, str],
    *,
    dead_letter: bool = False,
    check_at: float = 0,
) -> Done[Status]:
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


# Stripe's clock and ours may differ: look this far before the record's creation.
CREATED_MARGIN_SECONDS = 60


def find_intent(
    gateway: StripeGateway, stripe: MeteredStripe, record: PaymentRecord
) -> ChargeOutcome | None:
    """The PaymentIntent an earlier attempt made for this payment, if Stripe has one, charged
    or not (one awaiting 3-D Secure has no charge, and must be adopted all the same)."""
    return stripe.call(
        "payment_intents.list",
        gateway.find_payment_intent,
        customer=record.account_id,
        payment_id=record.id,
        created_since=epoch_seconds(record.created_at) - CREATED_MARGIN_SECONDS,
    )


def epoch_seconds(iso: str) -> int:
    """Seconds since the epoch of an ISO timestamp of a record."""
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
