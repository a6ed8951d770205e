"""The reconciler: payments whose outcome is ``unknown`` are looked up in Stripe until known.

A payment becomes ``unknown`` when its retries ran out and Stripe could not even be asked
whether an earlier attempt charged (see worker.charge). Each maintenance round takes the ones
that are due, holds each with the payment's lease, and asks Stripe for a PaymentIntent carrying
our payment id: found, it is adopted (succeeded, declined, ...); not found while Stripe
answers, nothing was charged and the payment fails as not charged (a dead letter an operator
may replay). While Stripe still cannot be asked, the next look is postponed with exponential
backoff up to RECONCILE_BACKOFF_MAX_SECONDS, and the round stops (Stripe is still down).
Kill Bill's janitor for UNKNOWN transactions is the model.
"""

from __future__ import annotations

import secrets
import time

import structlog

from shared.errors import PaymentServiceError
from shared.payments.states import Status
from shared.settings.service_settings import Settings
from shared.store import PaymentStore, Started
from shared.stripe.budget import StripeBudget
from shared.stripe.gateway import StripeGateway
from shared.stripe.outcomes import (
    Settled,
    TransientStripeError,
    not_charged,
    settle,
)
from worker.charge import find_charge, finish
from worker.stripe_calls import LeaseLost, MeteredStripe

log = structlog.get_logger(__name__)

BATCH = 20


def reconcile_unknown(
    store: PaymentStore, gateway: StripeGateway, budget: StripeBudget, settings: Settings
) -> dict[str, int]:
    """One round; returns how many were settled, postponed and skipped."""
    counts = {"settled": 0, "postponed": 0, "skipped": 0}
    for payment_id in store.due_unknown(limit=BATCH):
        token = secrets.token_hex(8)
        held = store.take_lease(payment_id, token=token)
        if not isinstance(held, Started):
            counts["skipped"] += 1
            continue
        record = held.record
        stripe = MeteredStripe(
            budget, None,
            keepalive=lambda pid=payment_id, t=token: store.heartbeat(  # type: ignore[misc]
                pid, token=t, delivery_tag=None),
        )  # fmt: skip
        try:
            found = find_charge(gateway, stripe, record)
        except (TransientStripeError, PaymentServiceError, LeaseLost) as exc:
            delay = min(
                settings.reconcile_backoff_seconds * 2**record.reconcile_attempts,
                settings.reconcile_backoff_max_seconds,
            )
            store.postpone_check(payment_id, token=token, check_at=time.time() + delay)
            log.info("reconcile.postponed", payment_id=payment_id, reason=str(exc),
                     next_in=round(delay, 1))  # fmt: skip
            counts["postponed"] += 1
            break
        if found is None:
            log.warning("reconcile.not_charged", payment_id=payment_id)
            finish(store, payment_id, Settled(Status.FAILED, not_charged(record.attempts)), {},
                   dead_letter=True)  # fmt: skip
        else:
            settled = settle(found).or_unknown()
            log.info(
                "reconcile.adopted",
                payment_id=payment_id,
                payment_intent=found.payment_intent_id,
                status=settled.status.value,
            )
            finish(store, payment_id, settled, {},
                   check_at=time.time() + settings.reconcile_backoff_seconds)  # fmt: skip
        counts["settled"] += 1
    return counts
