"""Thin Celery tasks of a payment's life after its first answer (issue 11): Stripe's events,
refunds, callbacks.

Arguments are ids and plain values; the logic lives in ``worker.stripe_events``,
``worker.refund_attempts`` and ``worker.callback_delivery``. Imported by ``worker.tasks`` so that
the one
Celery app registers them. ``payments.callback`` runs on its own queue (CALLBACK_QUEUE).
"""

from __future__ import annotations

import time
from functools import lru_cache

import structlog
from celery import Task
from celery.utils.time import get_exponential_backoff_interval
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.callbacks.events import CALLBACK_TASK, payment_callback, refund_callbacks
from shared.callbacks.signing import client_signing_secrets
from shared.payments.payment_records import STRIPE_EVENT_TASK, Status
from shared.payments.refund_records import REFUND_TASK, RefundRecord, RefundStatus
from shared.redis_clients import sync_redis
from shared.store.callback_store import CallbackStore
from shared.store.lifecycle_store import LifecycleStore
from shared.store.refund_store import RefundStore
from shared.stripe.budget import StripeBudget
from shared.stripe.outcomes import TransientStripeError
from worker.action_recheck import recheck_actions
from worker.callback_delivery import Callback, CallbackSender
from worker.celery_app import app
from worker.refund_attempts import RefundDone, RefundProcessor, RefundRetry, reconcile_refunds
from worker.stripe_events import StripeEventProcessor
from worker.tasks import REDIS_WAIT_MAX_SECONDS, gateway, settings, store, stripe_metrics

log = structlog.get_logger(__name__)

# Clients' own callback signing secrets (API_CLIENTS) are checked as the worker starts, not at
# its first callback: a malformed one stops it here, naming the client (never the secret).
client_signing_secrets(settings)

# An event is taken once (deduplicated by id), so Stripe's own redeliveries are ignored: the
# task retries for about a day itself (backoff capped at an hour) before it gives up.
EVENT_MAX_RETRIES = 30
EVENT_BACKOFF_MAX_SECONDS = 3600.0


@lru_cache(maxsize=1)
def lifecycle_store() -> LifecycleStore:
    return LifecycleStore(sync_redis(settings), settings)


@lru_cache(maxsize=1)
def refund_store() -> RefundStore:
    return RefundStore(sync_redis(settings), settings)


@lru_cache(maxsize=1)
def callback_store() -> CallbackStore:
    return CallbackStore(sync_redis(settings), settings)


@lru_cache(maxsize=1)
def callback_sender() -> CallbackSender:
    return CallbackSender(callback_store(), lifecycle_store(), refund_store(), settings)


def _payment_callback(payment_id: str, status: Status) -> bytes:
    return payment_callback(settings, payment_id, status)


def _refund_callbacks(refund: RefundRecord, status: RefundStatus) -> tuple[bytes, bytes]:
    return refund_callbacks(settings, refund, status)


@lru_cache(maxsize=1)
def event_processor() -> StripeEventProcessor:
    return StripeEventProcessor(lifecycle_store(), gateway(), _payment_callback)


@lru_cache(maxsize=1)
def refund_processor() -> RefundProcessor:
    return RefundProcessor(
        refund_store(),
        lifecycle_store(),
        gateway(),
        settings,
        StripeBudget(store(), settings.stripe_max_rps),
        stripe_metrics(),
        _refund_callbacks,
    )


def refunds_round() -> dict[str, int]:
    """The maintenance round's job for refunds: the recovery sweep (a message provably lost is
    pushed again), then the ones whose outcome is unknown are looked up at Stripe."""
    payments = store()
    requeued = refund_store().requeue_stale(
        queue_oldest_ms=payments.queue_oldest_ms(), reserved=payments.reserved_task_ids()
    )
    if requeued:
        log.warning("sweep.refunds_requeued", count=len(requeued), refund_ids=requeued[:20])
    return reconcile_refunds(
        refund_store(), lifecycle_store(), gateway(), settings, _refund_callbacks
    )


def actions_round() -> dict[str, int]:
    """The maintenance round's job for payments waiting for their customer (a missed webhook)."""
    return recheck_actions(lifecycle_store(), event_processor(), gateway())


def callbacks_round() -> int:
    """The maintenance round's job for callbacks: the recovery sweep (a message provably lost
    between kombu's pop and its unacked entry is pushed again), then the attempts that are due
    go back to the queue."""
    payments = store()
    requeued = callback_store().requeue_stale(
        queue_oldest_ms=payments.queue_oldest_ms(settings.callback_queue),
        reserved=payments.reserved_task_ids(),
    )
    if requeued:
        log.warning("sweep.callbacks_requeued", count=len(requeued), event_ids=requeued[:20])
    return callback_store().requeue_due()


def backoff(retries: int, cap: float) -> float:
    """Exponential with full jitter (Celery's own), capped."""
    jittered = get_exponential_backoff_interval(
        factor=1, retries=retries, maximum=int(cap), full_jitter=True
    )
    return float(jittered)


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
            countdown = backoff(retries, EVENT_BACKOFF_MAX_SECONDS)
            log.info("stripe_event.retry", reason=str(exc), countdown=round(countdown, 2))
            headers = {"enqueued_at": str(int(time.time() * 1000))}
            raise self.retry(countdown=countdown, headers=headers) from exc


# max_retries=None: the processor bounds Stripe attempts itself (CHARGE_MAX_RETRIES, counted on
# the refund record), as for charges.
@app.task(bind=True, name=REFUND_TASK, max_retries=None, acks_late=True)
def refund(self: Task[[str], str | None], refund_id: str) -> str | None:
    """Refund one refund request at Stripe; retry later when the processor says so (same
    idempotency key, reconciled first)."""
    request_id = getattr(self.request, "request_id", None)
    with structlog.contextvars.bound_contextvars(refund_id=refund_id, request_id=request_id):
        result = _refund_when_redis_answers(refund_id)
    if isinstance(result, RefundRetry):
        headers = {"request_id": request_id or "", "enqueued_at": str(int(time.time() * 1000))}
        raise self.retry(countdown=result.countdown, headers=headers)
    return result.status.value if result.status else None


def _refund_when_redis_answers(refund_id: str) -> RefundDone | RefundRetry:
    """As for charges (worker.tasks): nothing can be recorded while Redis is down, so the
    thread waits for it, its message unacknowledged."""
    wait = 0.5
    while True:
        try:
            return refund_processor().process(refund_id)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("refund.redis_unavailable", refund_id=refund_id,
                        error=type(exc).__name__, retry_in=wait)  # fmt: skip
            time.sleep(wait)
            wait = min(wait * 2, REDIS_WAIT_MAX_SECONDS)


# Routed to CALLBACK_QUEUE by the app's task_routes (worker.celery_app).
@app.task(name=CALLBACK_TASK, max_retries=0, acks_late=True)
def callback(
    event_id: str,
    event_type: str,
    payment_id: str,
    refund_id: str,
    occurred_ms: int,
    attempt: int = 1,
) -> str:
    """One attempt to deliver one callback. A failed attempt schedules the next one itself
    (in Redis, see worker.callback_delivery), so the task never retries through Celery."""
    with structlog.contextvars.bound_contextvars(event_id=event_id, payment_id=payment_id):
        wait = 0.5
        while True:
            try:
                return callback_sender().send(
                    Callback(event_id, event_type, payment_id, refund_id, occurred_ms, attempt)
                )
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning("callback.redis_unavailable", error=type(exc).__name__,
                            retry_in=wait)  # fmt: skip
                time.sleep(wait)
                wait = min(wait * 2, REDIS_WAIT_MAX_SECONDS)
