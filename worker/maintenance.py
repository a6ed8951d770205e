"""Periodic work every worker process runs in a background thread, one worker a round.

Each round (every MAINTENANCE_INTERVAL_SECONDS), the jobs of ``ROUNDS``, in order, each logged
by its name when it fails:
- ``queue_depth``: the queue-depth line for autoscaling, also the workers' heartbeat. First, so
  that a round waiting on a slow Stripe never delays it.
- ``payments_sweep``: the recovery sweep (``PaymentStore.requeue_stale``). Celery's Redis
  transport pops a message and records it as unacknowledged in two steps, and a Redis crash
  between them loses the message. A payment that is not final SWEEP_STALE_SECONDS after it was
  enqueued is pushed again only when its message is provably lost: no worker holds it, the
  queue has moved past it, and no worker has shown life for it since. A long backlog is never
  echoed.
- ``deadlines``: payments still queued past their deadline (``expires_at``) end ``expired``,
  never sent (``DeadlineStore.expire_due``), so that a backlog never hides an expiry: a
  worker taking such a payment's message would expire it too, but only once its turn came.
- ``payments_reconcile``: payments whose outcome is unknown are looked up in Stripe
  (``reconcile_round`` of worker.attempts, the one reconciler of charges and refunds).
- ``refunds``: the same recovery sweep for refunds, then refunds whose outcome is unknown.
- ``captures``: the same recovery sweep for captures and voids, then those whose outcome is
  unknown (the PaymentIntent retrieved).
- ``callbacks``: the same recovery sweep for callbacks (``CallbackStore.requeue_stale``), then
  the callback attempts that are due.
- ``actions``: payments waiting for their customer (3-D Secure), in case a webhook was missed.
- ``list_backfill``: until it is done once, payments whose records were written before the
  accept kept the clients' lists (an upgrade) are filed in them, a bounded part a round
  (``shared.store.list_store.ListBackfill``), so ``GET /payments`` lists them too.
- ``stripe_events``: every STRIPE_EVENTS_CATCHUP_SECONDS, in one worker of the fleet at a time
  (a turn of its own in Redis), Stripe's events whose webhook was not delivered are listed and
  those never taken are taken as their webhook would have been (``worker.event_catchup``).

No beat process is needed (one fewer thing to run and scale): each worker starts the thread as
it becomes ready (``worker_ready``), and a Redis key gives one of them each round. The thread
that flushes the Stripe call timings starts and stops alongside.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import redis
import structlog
from celery.signals import worker_ready, worker_shutdown

from shared.fleet_metrics import (
    WORKER_HEARTBEAT,
    StripeMetricsFlusher,
    emf_queue_depth,
    message_wait_seconds,
)
from shared.log_config import write_line
from shared.store import PaymentStore, charge_queues
from shared.store.keys import DEAD_LETTERS
from shared.store.list_store import ListBackfill
from worker import singletons
from worker.action_recheck import recheck_actions
from worker.singletons import settings

log = structlog.get_logger(__name__)


class Round(NamedTuple):
    """One job of a maintenance round; ``name`` is what its log lines carry (``job=``)."""

    name: str
    run: Callable[[], object]


class MaintenanceThread(threading.Thread):
    def __init__(
        self,
        store: PaymentStore,
        *,
        interval: float,
        rounds: Sequence[Round],
    ) -> None:
        super().__init__(name="payments-maintenance", daemon=True)
        self._store = store
        self._interval = interval
        self._rounds = rounds
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run_once(self) -> None:
        """Each job in turn; one that fails does not keep the others from running."""
        for job in self._rounds:
            try:
                job.run()
            except redis.RedisError as exc:
                log.warning("maintenance.failed", job=job.name, error=type(exc).__name__)
            except Exception:
                log.exception("maintenance.crashed", job=job.name)

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            try:
                mine = self._store.take_maintenance_turn(self._interval)
            except redis.RedisError as exc:
                log.warning("maintenance.failed", error=type(exc).__name__)
                continue
            if mine:
                self.run_once()


def publish_queue_depth(client: redis.Redis) -> None:
    """The autoscaling signal, as a CloudWatch EMF line on stdout (see deploy/ecs): messages
    waiting in the queues (QUEUE_NAME and every client's) plus those reserved by workers and
    not yet acknowledged (kombu's ``unacked`` hash; prefetch and retry countdowns hide them
    from LLEN) except the callbacks' (a slow receiver holds its callbacks' messages, which is
    no work for more charge workers), the same figure as ``payments_queue_depth``; with the
    oldest message's wait and the dead letters, which the template's alarms read. Also the
    workers' heartbeat for the "no worker" alert."""
    queues = charge_queues.read(client, settings.queue_name)
    reserved = charge_queues.reserved(client, settings.callback_queue)
    with client.pipeline(transaction=False) as pipe:
        pipe.zcard(DEAD_LETTERS)
        pipe.set(WORKER_HEARTBEAT, f"{time.time():.3f}")
        dead, _ = pipe.execute()
    line = emf_queue_depth(
        settings.queue_name,
        queues.ready + reserved.charges,
        reserved=reserved.charges,
        reserved_callbacks=reserved.callbacks,
        oldest_age=message_wait_seconds(queues.oldest) or 0.0,
        dead_letters=int(dead),
    )
    write_line(line)


def sweep(store: PaymentStore) -> list[str]:
    """The recovery sweep's round (see PaymentStore.requeue_stale)."""
    requeued = store.requeue_stale()
    if requeued:
        log.warning("sweep.requeued", count=len(requeued), payment_ids=requeued[:20])
    return requeued


def queue_depth() -> None:
    publish_queue_depth(singletons.maintenance_redis())


def payments_sweep() -> list[str]:
    return sweep(singletons.store())


def deadlines() -> list[str]:
    expired = singletons.store().deadlines.expire_due()
    if expired:
        log.info("deadlines.expired", count=len(expired), payment_ids=expired[:20])
    return expired


def payments_reconcile() -> dict[str, int]:
    return singletons.charge_processor().reconcile_round()


def refunds() -> dict[str, int]:
    """The recovery sweep for refunds (a message provably lost is pushed again), then the ones
    whose outcome is unknown are looked up at Stripe."""
    payments = singletons.store()
    requeued = singletons.refund_store().requeue_stale(
        queue_oldest_ms=payments.queue_oldest_ms(), reserved=payments.reserved_task_ids()
    )
    if requeued:
        log.warning("sweep.refunds_requeued", count=len(requeued), refund_ids=requeued[:20])
    return singletons.refund_processor().reconcile_round()


def captures() -> dict[str, int]:
    """The recovery sweep for captures and voids (a message provably lost is pushed again),
    then the ones whose outcome is unknown are looked up at Stripe."""
    payments = singletons.store()
    requeued = singletons.capture_store().requeue_stale(
        queue_oldest_ms=payments.queue_oldest_ms(), reserved=payments.reserved_task_ids()
    )
    if requeued:
        log.warning("sweep.captures_requeued", count=len(requeued), payment_ids=requeued[:20])
    return singletons.capture_processor().reconcile_round()


def callbacks() -> int:
    """The recovery sweep for callbacks (a message provably lost between kombu's pop and its
    unacked entry is pushed again), then the attempts that are due go back to the queue."""
    payments = singletons.store()
    requeued = singletons.callback_store().requeue_stale(
        queue_oldest_ms=payments.queue_oldest_ms(settings.callback_queue),
        reserved=payments.reserved_task_ids(),
    )
    if requeued:
        log.warning("sweep.callbacks_requeued", count=len(requeued), event_ids=requeued[:20])
    return singletons.callback_store().requeue_due()


def actions() -> dict[str, int]:
    """Payments waiting for their customer whose webhook may have been missed."""
    return recheck_actions(
        singletons.lifecycle_store(),
        singletons.event_processor(),
        singletons.gateway(),
        singletons.budget(),
        singletons.stripe_metrics(),
    )


@functools.cache
def _list_backfill() -> ListBackfill:
    """One a worker process: once it knows the backfill done, its rounds read nothing."""
    return ListBackfill(singletons.maintenance_redis())


def list_backfill() -> int | None:
    filed = _list_backfill().run()
    if filed:
        log.info("list_backfill.filed", count=filed)
    return filed


def stripe_events() -> dict[str, int]:
    """Stripe's events whose webhook was not delivered, taken as the webhook would have."""
    return singletons.event_catchup().run()


ROUNDS = (
    Round("queue_depth", queue_depth),
    Round("payments_sweep", payments_sweep),
    Round("deadlines", deadlines),
    Round("payments_reconcile", payments_reconcile),
    Round("refunds", refunds),
    Round("captures", captures),
    Round("callbacks", callbacks),
    Round("actions", actions),
    Round("list_backfill", list_backfill),
    Round("stripe_events", stripe_events),
)

_running: list[MaintenanceThread | StripeMetricsFlusher] = []


@worker_ready.connect
def start(**_: object) -> None:
    """The worker's background threads: the maintenance rounds and the metrics flusher."""
    thread = MaintenanceThread(
        singletons.store(), interval=settings.maintenance_interval_seconds, rounds=ROUNDS
    )
    flusher = StripeMetricsFlusher(
        singletons.stripe_metrics(), interval=settings.stripe_metrics_flush_seconds
    )
    for background in (thread, flusher):
        background.start()
        _running.append(background)


@worker_shutdown.connect
def stop(**_: object) -> None:
    # The flusher stops last: the last timings counted go to Redis before the worker exits.
    while _running:
        _running.pop(0).stop()
