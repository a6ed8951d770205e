"""Thin Celery tasks of a payment's life after its first answer (issue 11): Stripe's events.

Arguments are ids and plain values; the logic lives in ``worker.stripe_events``. Imported by
``worker.tasks`` so that the one Celery app registers them.
"""

from __future__ import annotations

import time
from functools import lru_cache

import structlog
from celery import Task
from celery.utils.time import get_exponential_backoff_interval
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.outcomes import TransientStripeError
from shared.records import STRIPE_EVENT_TASK
from shared.redis_clients import sync_redis
from shared.store.lifecycle import LifecycleStore
from worker.celery_app import app
from worker.stripe_events import StripeEventProcessor
from worker.tasks import gateway, settings

log = structlog.get_logger(__name__)

# An event is taken once (deduplicated by id), so Stripe's own redeliveries are ignored: the
# task retries for about a day itself (backoff capped at an hour) before it gives up.
EVENT_MAX_RETRIES = 30
EVENT_BACKOFF_MAX_SECONDS = 3600.0


@lru_cache(maxsize=1)
def lifecycle_store() -> LifecycleStore:
    return LifecycleStore(sync_redis(settings), settings)


@lru_cache(maxsize=1)
def event_processor() -> StripeEventProcessor:
    return StripeEventProcessor(lifecycle_store(), gateway())


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
