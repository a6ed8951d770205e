"""Stripe's webhook events, applied: the logic behind the ``payments.stripe_event`` task.

The rules (CONVENTIONS rule 16):
1. An event is a hint, never the truth: its object is fetched again from Stripe (the
   PaymentIntent, or the charge for refunds and disputes), so events arriving late, twice or
   out of order all lead to what Stripe says now.
2. The payment is ours only if the object carries our ``metadata.payment_id`` (the charge path
   sets it on every PaymentIntent) and its record exists; anything else is ignored and counted.
3. What Stripe says becomes a status and fields through ``shared.stripe.outcomes.settle`` (the
   one map) and is written only as the state machine (``shared.payments.states``) allows, in
   one script that also tells waiters and enqueues the client's callback. A payment the charge
   path still owns (queued, processing) is left to it: it learns the same from Stripe itself.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from shared.errors import PaymentServiceError
from shared.fleet_metrics import StripeCallMetrics
from shared.payments.payment_records import now_iso
from shared.payments.states import Status
from shared.store.lifecycle_store import LifecycleStore, Moved, Transition
from shared.stripe.budget import StripeBudget
from shared.stripe.gateway import StripeGateway
from shared.stripe.outcomes import (
    INTENT_EVENTS,
    ChargeOutcome,
    TransientStripeError,
    event_type_label,
    settle,
)
from worker.stripe_calls import MeteredStripe

log = structlog.get_logger(__name__)

# When an authorization's end was recorded: captured (succeeded) or released (canceled).
AUTHORIZATION_STAMPS = {Status.SUCCEEDED: "captured_at", Status.CANCELED: "canceled_at"}


def intent_transition(intent: ChargeOutcome) -> Transition | None:
    """Where a PaymentIntent's status takes the payment (None: still processing). An
    authorization captured or released is stamped with when that was learnt (written only if
    the payment moves: the first to learn it, this or the capture's own answer, stamps it)."""
    settled = settle(intent)
    if settled.status is Status.PROCESSING:
        return None
    fields = settled.record_fields
    if intent.manual and settled.status in AUTHORIZATION_STAMPS:
        fields[AUTHORIZATION_STAMPS[settled.status]] = now_iso()
    return Transition(settled.status, fields, settled.record_clear)


class StripeEventProcessor:
    def __init__(
        self,
        store: LifecycleStore,
        gateway: StripeGateway,
        callback_for: Callable[[str, Status], bytes] | None = None,
        budget: StripeBudget | None = None,
        metrics: StripeCallMetrics | None = None,
    ) -> None:
        self._store = store
        self._gateway = gateway
        # Each re-fetch books a slot of its endpoint's budget, as the charges' calls do.
        self._budget = budget or StripeBudget.off()
        self._metrics = metrics
        # The callback task message for a move (see worker.callback_delivery); none without one.
        self._callback_for = callback_for or (lambda payment_id, status: b"")

    def process(self, event_id: str, event_type: str, object_id: str, charge_id: str) -> str:
        """Apply one event; returns what happened (the metric's outcome). Raises
        TransientStripeError when Stripe could not be asked (the task retries)."""
        bound = log.bind(event_id=event_id, event_type=event_type)
        stripe = MeteredStripe(self._budget, self._metrics)
        try:
            outcome = self._apply(stripe, event_type, object_id, charge_id)
        except TransientStripeError:
            raise
        except PaymentServiceError as exc:
            # Stripe has no such object (any more), or refused the lookup: not ours to apply.
            bound.info("stripe_event.unresolved", code=exc.code)
            outcome = "unresolved"
        finally:
            stripe.flush()
        bound.info("stripe_event.done", outcome=outcome)
        self._store.count_webhook(event_type_label(event_type), outcome)
        return outcome

    def _apply(self, stripe: MeteredStripe, event_type: str, object_id: str, charge_id: str) -> str:
        if event_type in INTENT_EVENTS:
            intent = stripe.call("payment_intents.retrieve", self._gateway.retrieve_payment_intent,
                                 payment_intent_id=object_id)  # fmt: skip
            return self.apply_intent(intent)
        if event_type not in ("charge.refunded", "charge.dispute.created"):
            return "ignored"
        refunded = event_type == "charge.refunded"  # else a dispute: its charge is named apart
        target = object_id if refunded else charge_id or object_id
        charge = stripe.call("charges.retrieve", self._gateway.retrieve_charge, charge_id=target)
        if refunded:
            return self._refunded(charge.payment_id, charge.amount_refunded_minor)
        if not charge.disputed:
            return "unchanged"  # Stripe no longer says so (closed, or not this charge)
        return self._move(charge.payment_id, Transition(Status.DISPUTED, {}))

    def apply_intent(self, intent: ChargeOutcome) -> str:
        """What a PaymentIntent (fetched from Stripe just now) means for its payment: the path
        of every ``payment_intent.*`` event, and of the re-check (worker.action_recheck)."""
        return self._move(intent.payment_id, intent_transition(intent))

    def _move(self, payment_id: str | None, move: Transition | None) -> str:
        if payment_id is None:
            return "not_ours"
        if move is None:
            return "unchanged"
        record = self._store.get(payment_id)
        if record is None:
            return "not_ours"
        if record.status in (Status.QUEUED, Status.PROCESSING):
            return "charge_in_flight"  # the charge path learns it from Stripe itself
        moved = self._store.transition(
            payment_id, move, callback=self._callback_for(payment_id, move.to)
        )
        if moved is Moved.MOVED:
            log.info("payment.moved", payment_id=payment_id, status=move.to.value,
                     was=record.status.value)  # fmt: skip
            if move.to is Status.REQUIRES_ACTION:  # the customer must act: re-check later
                self._store.schedule_action_check(payment_id)
        return {Moved.MOVED: "applied", Moved.UNCHANGED: "unchanged",
                Moved.GONE: "not_ours", Moved.REFUSED: "refused"}[moved]  # fmt: skip

    def _refunded(self, payment_id: str | None, stripe_refunded_minor: int) -> str:
        """Refunds Stripe knows of (ours and the dashboard's): see worker.refund_attempts."""
        if payment_id is None or self._store.get(payment_id) is None:
            return "not_ours"
        from worker.refund_attempts import apply_stripe_refunded

        return apply_stripe_refunded(
            self._store, payment_id, stripe_refunded_minor, self._callback_for
        )
