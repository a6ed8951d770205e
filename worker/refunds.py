"""Refunds: what Stripe says was refunded, and (see RefundProcessor) the refunds clients ask for."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from shared.records import Status
from shared.store.lifecycle import LifecycleStore

log = structlog.get_logger(__name__)


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
