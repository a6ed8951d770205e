"""Thin Celery tasks: arguments are ids, the logic (and its retry policy) lives in worker.charge."""

from __future__ import annotations

import time
from functools import lru_cache

import redis
import structlog
from celery import Task
from celery.signals import worker_ready, worker_shutdown
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.config import get_settings
from shared.metrics import StripeCallMetrics, emf_queue_depth
from shared.rate_limit import SharedRateLimiter
from shared.records import CHARGE_TASK
from shared.redis_clients import sync_redis
from shared.stripe_gateway import StripeGateway
from worker.celery_app import app
from worker.charge import ChargeProcessor, Done, RetryLater
from worker.maintenance import MaintenanceThread

settings = get_settings()
log = structlog.get_logger(__name__)

REDIS_WAIT_MAX_SECONDS = 5.0


@lru_cache(maxsize=1)
def processor() -> ChargeProcessor:
    """One Redis pool and one Stripe HTTP pool per worker process, shared by its threads."""
    client = sync_redis(settings)
    return ChargeProcessor(
        client,
        StripeGateway(settings),
        settings,
        SharedRateLimiter(client, settings.stripe_max_rps),
        StripeCallMetrics(client),
    )


# max_retries=None: the processor bounds Stripe attempts itself (CHARGE_MAX_RETRIES, counted on
# the payment record so that a redelivered message does not start the count again), and a retry
# that only waited for another worker's lease must not use up that budget.
@app.task(bind=True, name=CHARGE_TASK, max_retries=None, acks_late=True)
def charge(self: Task[[str], str | None], payment_id: str) -> str | None:
    """Charge one payment; retry later when the processor says so (same idempotency key)."""
    # The API's request id follows the payment into every log line of its task.
    request_id = getattr(self.request, "request_id", None)
    with structlog.contextvars.bound_contextvars(payment_id=payment_id, request_id=request_id):
        result = _process_when_redis_answers(payment_id)
    if isinstance(result, RetryLater):
        raise self.retry(countdown=result.countdown, headers={"request_id": request_id or ""})
    return result.status.value if result.status else None


def _process_when_redis_answers(payment_id: str) -> Done | RetryLater:
    """While Redis is down nothing can be recorded, retried or even acknowledged, and a task
    that fails now would be dropped by Celery. So the thread waits for Redis and then carries
    on: its message stays unacknowledged meanwhile, and comes back by itself if this worker
    dies waiting."""
    wait = 0.5
    while True:
        try:
            return processor().process(payment_id)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("charge.redis_unavailable", payment_id=payment_id,
                        error=type(exc).__name__, retry_in=wait)  # fmt: skip
            time.sleep(wait)
            wait = min(wait * 2, REDIS_WAIT_MAX_SECONDS)


_maintenance: list[MaintenanceThread] = []


def _publish_queue_depth(client: redis.Redis) -> None:
    """The autoscaling signal, as a CloudWatch EMF line on stdout (see deploy/ecs): messages
    waiting in the queue plus those reserved by workers and not yet acknowledged (kombu's
    ``unacked`` hash; prefetch and retry countdowns hide them from LLEN), the same figure as
    ``payments_queue_depth``. Also the workers' heartbeat for the "no worker" alert."""
    from shared.metrics import UNACKED, WORKER_HEARTBEAT

    with client.pipeline(transaction=False) as pipe:
        pipe.llen(settings.queue_name)
        pipe.hlen(UNACKED)
        pipe.set(WORKER_HEARTBEAT, f"{time.time():.3f}")
        ready, reserved, _ = pipe.execute()
    line = emf_queue_depth(settings.queue_name, int(ready) + int(reserved), reserved=int(reserved))
    print(line, flush=True)


@worker_ready.connect
def _start_maintenance(**_: object) -> None:
    client = sync_redis(settings)
    thread = MaintenanceThread(client, settings, extra=lambda: _publish_queue_depth(client))
    thread.start()
    _maintenance.append(thread)


@worker_shutdown.connect
def _stop_maintenance(**_: object) -> None:
    for thread in _maintenance:
        thread.stop()
