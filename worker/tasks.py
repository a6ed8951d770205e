"""Thin Celery tasks: arguments are ids, the logic (and its retry policy) lives in worker.charge."""

from __future__ import annotations

import time

import structlog
from celery import Task

from shared.payments.payment_records import CHARGE_TASK
from shared.payments.states import Status
from worker.attempts import Done, RetryLater
from worker.celery_app import app
from worker.redis_wait import until_redis_answers
from worker.singletons import charge_processor, store

log = structlog.get_logger(__name__)


# max_retries=None: the processor bounds Stripe attempts itself (CHARGE_MAX_RETRIES, counted on
# the payment record so that a redelivered message does not start the count again), and a retry
# that only waited for another worker's lease must not use up that budget.
@app.task(bind=True, name=CHARGE_TASK, max_retries=None, acks_late=True)
def charge(self: Task[[str], str | None], payment_id: str) -> str | None:
    """Charge one payment; retry later when the processor says so (same idempotency key)."""
    # The API's request id follows the payment into every log line of its task.
    request_id = getattr(self.request, "request_id", None)
    # kombu's tag for this delivery (the key of its unacked entry) rides in the properties.
    tag = (getattr(self.request, "properties", None) or {}).get("delivery_tag")
    delivery_tag = str(tag) if tag else None

    def process() -> Done[Status] | RetryLater:
        result = charge_processor().process(payment_id, delivery_tag=delivery_tag)
        if isinstance(result, Done) and result.status is None:
            # Nothing written (already final, say): with REDIS_MIN_REPLICAS, replicas hold the
            # earlier writes before the message is acknowledged (a final outcome's write WAITs
            # in PaymentStore.finish).
            store().replicated()
        return result

    with structlog.contextvars.bound_contextvars(payment_id=payment_id, request_id=request_id):
        result = until_redis_answers(
            process, event="charge.redis_unavailable", payment_id=payment_id
        )
    if isinstance(result, RetryLater):
        # Stamped like every message the service enqueues (see PaymentStore.requeue_stale).
        headers = {"request_id": request_id or "", "enqueued_at": str(int(time.time() * 1000))}
        raise self.retry(countdown=result.countdown, headers=headers)
    return result.status.value if result.status else None
