"""Re-checks of payments waiting for their customer (``requires_action``, 3-D Secure): the net
under a missed webhook.

Stripe's ``payment_intent.*`` webhook normally moves such a payment once the customer acts. If
it never arrives (the endpoint misconfigured, a secret rotated wrongly, an outage longer than
Stripe's retries), the maintenance round asks Stripe itself: each waiting payment is looked at
ACTION_RECHECK_FIRST_SECONDS after it began waiting, then at doubling intervals up to
ACTION_RECHECK_MAX_SECONDS, until it has moved or its record expires. What Stripe says goes
through the same path as a webhook (``StripeEventProcessor.apply_intent``), so the two never
disagree and whichever comes first wins, once.
"""

from __future__ import annotations

import time

import structlog

from shared.errors import PaymentServiceError
from shared.fleet_metrics import StripeCallMetrics
from shared.payments.states import Status
from shared.store.lifecycle_store import ACTION_RECHECK_FIRST_SECONDS, LifecycleStore
from shared.stripe.budget import StripeBudget
from shared.stripe.gateway import StripeGateway
from shared.stripe.outcomes import TransientStripeError
from worker.charge import epoch_seconds
from worker.stripe_calls import MeteredStripe
from worker.stripe_events import StripeEventProcessor

log = structlog.get_logger(__name__)

ACTION_RECHECK_MAX_SECONDS = 6 * 3600.0
BATCH = 20


def next_check(waiting_since: float, now: float) -> float:
    """Doubling from ACTION_RECHECK_FIRST_SECONDS with the time already waited, capped."""
    waited = max(0.0, now - waiting_since)
    return now + min(ACTION_RECHECK_MAX_SECONDS, max(ACTION_RECHECK_FIRST_SECONDS, waited))


def recheck_actions(
    store: LifecycleStore,
    processor: StripeEventProcessor,
    gateway: StripeGateway,
    budget: StripeBudget | None = None,
    metrics: StripeCallMetrics | None = None,
) -> dict[str, int]:
    """One round; returns how many moved, are still waiting, and were dropped. Each look books
    a slot of its endpoint's budget."""
    counts = {"moved": 0, "waiting": 0, "dropped": 0}
    now = time.time()
    stripe = MeteredStripe(budget or StripeBudget.off(), metrics)
    try:
        _recheck(store, processor, gateway, stripe, counts, now)
    finally:
        stripe.flush()
    return counts


def _recheck(
    store: LifecycleStore,
    processor: StripeEventProcessor,
    gateway: StripeGateway,
    stripe: MeteredStripe,
    counts: dict[str, int],
    now: float,
) -> None:
    for payment_id in store.due_action_checks(limit=BATCH):
        record = store.get(payment_id)
        if record is None or record.status is not Status.REQUIRES_ACTION:
            store.drop_action_check(payment_id)  # moved already (a webhook), or expired
            counts["dropped"] += 1
            continue
        if not record.payment_intent:
            store.drop_action_check(payment_id)
            counts["dropped"] += 1
            continue
        try:
            intent = stripe.call("payment_intents.retrieve", gateway.retrieve_payment_intent,
                                 payment_intent_id=record.payment_intent)  # fmt: skip
        except TransientStripeError as exc:
            log.info("action_recheck.postponed", payment_id=payment_id, reason=str(exc))
            break  # Stripe is unreachable: the next round tries again
        except PaymentServiceError as exc:
            log.warning("action_recheck.unresolved", payment_id=payment_id, code=exc.code)
            store.drop_action_check(payment_id)
            counts["dropped"] += 1
            continue
        outcome = processor.apply_intent(intent)
        if outcome == "applied":
            log.info("action_recheck.moved", payment_id=payment_id)
            counts["moved"] += 1
            store.drop_action_check(payment_id)
        else:
            store.schedule_action_check(
                payment_id, at=next_check(epoch_seconds(record.updated_at), now)
            )
            counts["waiting"] += 1
