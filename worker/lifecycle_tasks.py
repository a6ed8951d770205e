"""Thin Celery tasks of a payment's life after its first answer: Stripe's events, refunds,
captures and voids, callbacks.

Arguments are ids and plain values; the logic lives in ``worker.stripe_events``,
``worker.refund_attempts``, ``worker.capture_attempts`` and ``worker.callback_delivery``.
``payments.callback`` runs on its own queue (CALLBACK_QUEUE).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from celery import Task
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.backoff import backoff
from shared.callbacks.events import CALLBACK_TASK
from shared.callbacks.signing import client_signing_secrets
from shared.payments.payment_records import CAPTURE_TASK, STRIPE_EVENT_TASK
from shared.payments.refund_records import REFUND_TASK
from shared.stripe.outcomes import TransientStripeError
from worker.attempts import Done, RetryLater
from worker.callback_delivery import Callback, Deferred
from worker.celery_app import app
from worker.redis_wait import until_redis_answers
from worker.singletons import (
    callback_sender,
    capture_processor,
    event_processor,
    refund_processor,
    settings,
)

log = structlog.get_logger(__name__)

# Clients' own callback signing secrets (API_CLIENTS) are checked as the worker starts, not at
# its first callback: a malformed one stops it here, naming the client (never the secret).
client_signing_secrets(settings)

# An event is taken once (deduplicated by id), so Stripe's own redeliveries are ignored: the
# task retries for about a day itself (backoff capped at an hour) before it gives up.
EVENT_MAX_RETRIES = 30
EVENT_BACKOFF_MAX_SECONDS = 3600.0


@app.task(bind=True, name=STRIPE_EVENT_TASK, max_retries=None, acks_late=True)
def stripe_event(
    self: Task[[str, str, str, str], str | None],
    event_id: str,
    event_type: str,
    object_id: str,
    charge_id: str = "",
) -> str | None:
    """Apply one Stripe event (its object fetched again); retried while Stripe or Redis is
    unreachable."""
    with structlog.contextvars.bound_contextvars(event_id=event_id):
        try:
            return event_processor().process(event_id, event_type, object_id, charge_id)
        except (TransientStripeError, RedisConnectionError, RedisTimeoutError) as exc:
            retries = self.request.retries or 0
            if retries >= EVENT_MAX_RETRIES:
                log.error("stripe_event.gave_up", event_type=event_type, reason=str(exc))
                return None
            countdown = backoff(retries, base=1.0, cap=EVENT_BACKOFF_MAX_SECONDS, jitter="full")
            log.info("stripe_event.retry", reason=str(exc), countdown=round(countdown, 2))
            headers = {"enqueued_at": str(int(time.time() * 1000))}
            raise self.retry(countdown=countdown, headers=headers) from exc


def _attempt(
    task: Task[[str], str | None],
    process: Callable[[], Done[Any] | RetryLater],
    *,
    event: str,
    **ids: str,
) -> str | None:
    """One attempt of a refund, capture or void, waited through while Redis does not answer
    (each wait logged as ``event``); the task again after the processor's countdown when it
    says retry later. The status it ended in, if any."""
    request_id = getattr(task.request, "request_id", None)
    with structlog.contextvars.bound_contextvars(**ids, request_id=request_id):
        result = until_redis_answers(process, event=event, sleep=time.sleep, **ids)
    if isinstance(result, RetryLater):
        headers = {"request_id": request_id or "", "enqueued_at": str(int(time.time() * 1000))}
        raise task.retry(countdown=result.countdown, headers=headers)
    return result.status.value if result.status else None


# max_retries=None: the processor bounds Stripe attempts itself (CHARGE_MAX_RETRIES, counted on
# the refund record), as for charges.
@app.task(bind=True, name=REFUND_TASK, max_retries=None, acks_late=True)
def refund(self: Task[[str], str | None], refund_id: str) -> str | None:
    """Refund one refund request at Stripe; retry later when the processor says so (same
    idempotency key, reconciled first)."""
    return _attempt(
        self,
        lambda: refund_processor().process(refund_id),
        event="refund.redis_unavailable",
        refund_id=refund_id,
    )


# max_retries=None: as for refunds, the processor bounds the Stripe attempts (CHARGE_MAX_RETRIES,
# counted on the payment's record).
@app.task(bind=True, name=CAPTURE_TASK, max_retries=None, acks_late=True)
def capture(self: Task[[str], str | None], payment_id: str) -> str | None:
    """Capture or void one payment's authorization at Stripe, as its record asks; retry later
    when the processor says so (same idempotency key, reconciled first)."""
    return _attempt(
        self,
        lambda: capture_processor().process(payment_id),
        event="capture.redis_unavailable",
        payment_id=payment_id,
    )


# Routed to CALLBACK_QUEUE by the app's task_routes (worker.celery_app). max_retries=None: a
# failed attempt schedules the next one itself (in Redis, see worker.callback_delivery); Celery
# retries only put back a message whose attempt could not begin, for a few seconds.
@app.task(bind=True, name=CALLBACK_TASK, max_retries=None, acks_late=True)
def callback(
    self: Task[[str, str, str, str, int, int], str],
    event_id: str,
    event_type: str,
    payment_id: str,
    refund_id: str,
    occurred_ms: int,
    attempt: int = 1,
) -> str:
    """One attempt to deliver one callback, or its message back to the queue for a moment when
    the attempt cannot begin (no free callback slot in this worker, or another attempt at the
    event is live): a thread never waits for a slot."""
    delivery = Callback(event_id, event_type, payment_id, refund_id, occurred_ms, attempt)
    token = uuid.uuid4().hex  # the attempt's hold on its event, kept across Redis waits
    with structlog.contextvars.bound_contextvars(event_id=event_id, payment_id=payment_id):
        result = until_redis_answers(
            lambda: callback_sender().send(delivery, token=token),
            event="callback.redis_unavailable",
        )
    if isinstance(result, Deferred):
        # Stamped as when the callback was first queued, so that the recovery sweep never
        # takes the waiting message for one the queue has moved past. Under the visibility
        # timeout, so that the transport never hands it out twice.
        enqueued_at = getattr(self.request, "enqueued_at", None) or int(time.time() * 1000)
        countdown = min(result.countdown, settings.visibility_timeout_seconds / 2)
        raise self.retry(countdown=countdown, headers={"enqueued_at": str(enqueued_at)})
    return result
