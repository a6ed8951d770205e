"""Periodic work every worker process runs in a background thread, one worker at a time.

- Recovery sweep: a payment still not final ``SWEEP_STALE_SECONDS`` after its last change, and
  held by no worker, is enqueued again. Celery's Redis transport pops a message and records it as
  unacknowledged in two steps; a Redis crash between them loses the message, and only this sweep
  brings such a payment back. A duplicate it might add is harmless: the lease, the final-status
  check and the idempotency key make a second delivery a no-op.
- Queue depth: published for autoscaling (see worker.metrics).

No beat process is needed (one fewer thing to run and scale): each worker starts the thread, and
a Redis lock lets one of them do a round at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis
import structlog

from shared.celery_message import charge_message
from shared.config import Settings
from shared.records import LOCK_PREFIX, PENDING, RECORD_PREFIX

log = structlog.get_logger(__name__)

ROUND_LOCK = "payments:maintenance"

# For one pending payment ARGV[1] due now: drop it from the index if gone or final; postpone it
# if a worker holds it; else push its task message ARGV[2] again (1) and postpone.
SWEEP_SCRIPT = """
local status = redis.call('HGET', ARGV[3] .. ARGV[1], 'status')
if (not status) or status == 'succeeded' or status == 'failed' or status == 'requires_action' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
if redis.call('EXISTS', ARGV[4] .. ARGV[1]) == 1 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
"""


def sweep(client: redis.Redis, settings: Settings, *, now: float | None = None) -> list[str]:
    """Re-enqueue stale pending payments; returns their ids."""
    now = time.time() if now is None else now
    script = client.register_script(SWEEP_SCRIPT)
    due: list[bytes] = client.zrangebyscore(PENDING, "-inf", now, start=0, num=500)  # type: ignore[assignment]
    requeued = []
    for member in due:
        payment_id = member.decode()
        message = charge_message(payment_id, queue=settings.queue_name, headers={"recovered": True})
        pushed = script(
            keys=[PENDING, settings.queue_name],
            args=[payment_id, message, RECORD_PREFIX, LOCK_PREFIX,
                  int(now) + settings.sweep_stale_seconds],
        )  # fmt: skip
        if pushed == 1:
            requeued.append(payment_id)
    if requeued:
        log.warning("sweep.requeued", count=len(requeued), payment_ids=requeued[:20])
    return requeued


class MaintenanceThread(threading.Thread):
    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        *,
        interval: float = 30.0,
        extra: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name="payments-maintenance", daemon=True)
        self._client = client
        self._settings = settings
        self._interval = interval
        self._extra = extra
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            try:
                # One worker a round; the lock expires before the next round is due.
                if self._client.set(ROUND_LOCK, "1", nx=True, ex=max(1, int(self._interval) - 1)):
                    sweep(self._client, self._settings)
                    if self._extra is not None:
                        self._extra()
            except redis.RedisError as exc:
                log.warning("maintenance.failed", error=type(exc).__name__)
