"""Thin Celery tasks: arguments are ids, the logic (and its retry policy) lives in worker.charge."""

from __future__ import annotations

from functools import lru_cache

from celery import Task

from shared.config import get_settings
from shared.rate_limit import SharedRateLimiter
from shared.records import CHARGE_TASK
from shared.redis import sync_redis
from shared.stripe_gateway import StripeGateway
from worker.celery_app import app
from worker.charge import ChargeProcessor, RetryLater

settings = get_settings()


@lru_cache(maxsize=1)
def processor() -> ChargeProcessor:
    """One Redis pool and one Stripe HTTP pool per worker process, shared by its threads."""
    client = sync_redis(settings)
    return ChargeProcessor(
        client,
        StripeGateway(settings),
        settings,
        SharedRateLimiter(client, settings.stripe_max_rps),
    )


# max_retries=None: the processor bounds Stripe attempts itself (CHARGE_MAX_RETRIES, counted on
# the payment record so that a redelivered message does not start the count again), and a retry
# that only waited for another worker's lease must not use up that budget.
@app.task(bind=True, name=CHARGE_TASK, max_retries=None, acks_late=True)
def charge(self: Task[[str], str | None], payment_id: str) -> str | None:
    """Charge one payment; retry later when the processor says so (same idempotency key)."""
    result = processor().process(payment_id)
    if isinstance(result, RetryLater):
        raise self.retry(countdown=result.countdown)
    return result.status.value if result.status else None
