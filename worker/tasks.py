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

from shared.fleet_metrics import StripeCallMetrics, StripeMetricsFlusher, emf_queue_depth
from shared.payments.payment_records import CHARGE_TASK
from shared.redis_clients import sync_redis
from shared.settings.service_settings import get_settings
from shared.store import PaymentStore
from shared.stripe.budget import StripeBudget
from shared.stripe.gateway import StripeGateway
from worker.celery_app import app
from worker.charge import ChargeProcessor, Done, RetryLater
from worker.maintenance import MaintenanceThread, sweep
from worker.reconcile import reconcile_unknown

settings = get_settings()
log = structlog.get_logger(__name__)

REDIS_WAIT_MAX_SECONDS = 5.0


@lru_cache(maxsize=1)
def store() -> PaymentStore:
    """One Redis pool per worker process, shared by its threads."""
    return PaymentStore(sync_redis(settings), settings)


@lru_cache(maxsize=1)
def gateway() -> StripeGateway:
    """One Stripe HTTP pool per worker process, shared by its threads."""
    return StripeGateway(settings)


@lru_cache(maxsize=1)
def stripe_metrics() -> StripeCallMetrics:
    """The Stripe call timings of every task of this process, flushed to Redis every
    STRIPE_METRICS_FLUSH_SECONDS by a thread started with the worker."""
    return StripeCallMetrics(sync_redis(settings))


@lru_cache(maxsize=1)
def processor() -> ChargeProcessor:
    return ChargeProcessor(
        store(),
        gateway(),
        settings,
        StripeBudget(store(), settings.stripe_max_rps),
        stripe_metrics(),
    )


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
    with structlog.contextvars.bound_contextvars(payment_id=payment_id, request_id=request_id):
        result = _process_when_redis_answers(payment_id, delivery_tag)
    if isinstance(result, RetryLater):
        # Stamped like every message the service enqueues (see PaymentStore.requeue_stale).
        headers = {"request_id": request_id or "", "enqueued_at": str(int(time.time() * 1000))}
        raise self.retry(countdown=result.countdown, headers=headers)
    return result.status.value if result.status else None


def _process_when_redis_answers(payment_id: str, delivery_tag: str | None) -> Done | RetryLater:
    """While Redis is down nothing can be recorded, retried or even acknowledged, and a task
    that fails now would be dropped by Celery. So the thread waits for Redis and then carries
    on: its message stays unacknowledged meanwhile, and comes back by itself if this worker
    dies waiting."""
    wait = 0.5
    while True:
        try:
            result = processor().process(payment_id, delivery_tag=delivery_tag)
            if isinstance(result, Done) and result.status is None:
                # Nothing written (already final, say): with REDIS_MIN_REPLICAS, replicas hold
                # what was before the message is acknowledged (a final outcome's write WAITs
                # in PaymentStore.finish).
                store().replicated()
            return result
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("charge.redis_unavailable", payment_id=payment_id,
                        error=type(exc).__name__, retry_in=wait)  # fmt: skip
            time.sleep(wait)
            wait = min(wait * 2, REDIS_WAIT_MAX_SECONDS)


_maintenance: list[MaintenanceThread] = []
_flushers: list[StripeMetricsFlusher] = []


def _publish_queue_depth(client: redis.Redis) -> None:
    """The autoscaling signal, as a CloudWatch EMF line on stdout (see deploy/ecs): messages
    waiting in the queue plus those reserved by workers and not yet acknowledged (kombu's
    ``unacked`` hash; prefetch and retry countdowns hide them from LLEN), the same figure as
    ``payments_queue_depth``; with the oldest message's wait and the dead letters, which the
    template's alarms read. Also the workers' heartbeat for the "no worker" alert."""
    from shared.fleet_metrics import WORKER_HEARTBEAT, message_wait_seconds
    from shared.store.keys import DEAD_LETTERS, UNACKED

    with client.pipeline(transaction=False) as pipe:
        pipe.llen(settings.queue_name)
        pipe.hlen(UNACKED)
        pipe.lindex(settings.queue_name, -1)  # pushed on the left, popped on the right
        pipe.zcard(DEAD_LETTERS)
        pipe.set(WORKER_HEARTBEAT, f"{time.time():.3f}")
        ready, reserved, head, dead, _ = pipe.execute()
    line = emf_queue_depth(
        settings.queue_name,
        int(ready) + int(reserved),
        reserved=int(reserved),
        oldest_age=message_wait_seconds(head) or 0.0,
        dead_letters=int(dead),
    )
    print(line, flush=True)


@worker_ready.connect
def _start_maintenance(**_: object) -> None:
    client = sync_redis(settings)
    payments = store()
    thread = MaintenanceThread(
        payments,
        interval=settings.maintenance_interval_seconds,
        # The queue-depth line first: it is also the workers' heartbeat, and a reconciler
        # round waiting on a slow Stripe must not delay it.
        rounds=[
            lambda: _publish_queue_depth(client),
            lambda: sweep(payments),
            lambda: reconcile_unknown(
                payments, gateway(), StripeBudget(payments, settings.stripe_max_rps), settings
            ),
            lambda: lifecycle_tasks.refunds_round(),  # refunds whose outcome is unknown
            lambda: lifecycle_tasks.callbacks_round(),  # callbacks: sweep, attempts due
            lambda: lifecycle_tasks.actions_round(),  # 3-D Secure waits: a missed webhook
        ],
    )
    thread.start()
    _maintenance.append(thread)
    flusher = StripeMetricsFlusher(stripe_metrics(), interval=settings.stripe_metrics_flush_seconds)
    flusher.start()
    _flushers.append(flusher)


@worker_shutdown.connect
def _stop_maintenance(**_: object) -> None:
    for thread in _maintenance:
        thread.stop()
    for flusher in _flushers:  # the last timings counted go to Redis before the worker exits
        flusher.stop()


# The tasks of a payment's life after its first answer (issue 11), on the same app.
from worker import lifecycle_tasks  # noqa: E402
