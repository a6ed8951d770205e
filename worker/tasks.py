"""Thin Celery tasks: arguments are ids, the logic lives in worker.charge."""

from __future__ import annotations

from functools import lru_cache

from celery import Task
from celery.utils.time import get_exponential_backoff_interval

from shared.config import get_settings
from shared.records import CHARGE_TASK
from shared.redis import sync_redis
from shared.stripe_gateway import StripeGateway
from worker.celery_app import app
from worker.charge import ChargeProcessor, RetryLater

settings = get_settings()


@lru_cache(maxsize=1)
def processor() -> ChargeProcessor:
    """One Redis pool and one Stripe HTTP pool per worker process, shared by its threads."""
    return ChargeProcessor(sync_redis(settings), StripeGateway(settings))


@app.task(
    bind=True,
    name=CHARGE_TASK,
    max_retries=settings.charge_max_retries,
    acks_late=True,
)
def charge(self: Task[[str], str | None], payment_id: str) -> str | None:
    """Charge one payment. Transient Stripe failures retry with backoff and full jitter,
    always with the payment's own idempotency key; the last attempt records a failure."""
    retries = self.request.retries
    result = processor().process(payment_id, last_attempt=retries >= (self.max_retries or 0))
    if isinstance(result, RetryLater):
        countdown = result.countdown or get_exponential_backoff_interval(
            factor=1,
            retries=retries,
            maximum=settings.charge_retry_backoff_max_seconds,
            full_jitter=True,
        )
        raise self.retry(countdown=min(countdown, settings.charge_retry_backoff_max_seconds))
    return result.status.value if result.status else None
