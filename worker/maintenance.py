"""Periodic work every worker process runs in a background thread, one worker a round.

Each round (every MAINTENANCE_INTERVAL_SECONDS), the jobs the worker gives it, in order:
- The queue-depth line for autoscaling, also the workers' heartbeat (see worker.tasks).
- Recovery sweep (``PaymentStore.requeue_stale``): Celery's Redis transport pops a message and
  records it as unacknowledged in two steps, and a Redis crash between them loses the message.
  A payment that is not final SWEEP_STALE_SECONDS after it was enqueued is pushed again only
  when its message is provably lost: no worker holds it, the queue has moved past it, and no
  worker has shown life for it since. A long backlog is never echoed.
- Reconciler (``worker.reconcile``): payments whose outcome is unknown are looked up in Stripe.
- The lifecycle's jobs (``worker.lifecycle_tasks``): the same recovery sweep for refunds and
  for callbacks (``CallbackStore.requeue_stale``), refunds whose outcome is unknown, callback
  attempts that are due, payments waiting for their customer (3-D Secure).

No beat process is needed (one fewer thing to run and scale): each worker starts the thread, and
a Redis key gives one of them each round.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import redis
import structlog

from shared.store import PaymentStore

log = structlog.get_logger(__name__)


class MaintenanceThread(threading.Thread):
    def __init__(
        self,
        store: PaymentStore,
        *,
        interval: float,
        rounds: list[Callable[[], object]],
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
                job()
            except redis.RedisError as exc:
                log.warning("maintenance.failed", job=getattr(job, "__name__", "?"),
                            error=type(exc).__name__)  # fmt: skip
            except Exception:
                log.exception("maintenance.crashed", job=getattr(job, "__name__", "?"))

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            try:
                mine = self._store.take_maintenance_turn(self._interval)
            except redis.RedisError as exc:
                log.warning("maintenance.failed", error=type(exc).__name__)
                continue
            if mine:
                self.run_once()


def sweep(store: PaymentStore) -> list[str]:
    """The recovery sweep's round (see PaymentStore.requeue_stale)."""
    requeued = store.requeue_stale()
    if requeued:
        log.warning("sweep.requeued", count=len(requeued), payment_ids=requeued[:20])
    return requeued
