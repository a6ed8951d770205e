"""A task's work, carried on once Redis answers again.

While Redis is down nothing can be recorded, retried or even acknowledged, and a task that
failed then would be dropped by Celery. So the task's thread waits for Redis (backing off to
REDIS_WAIT_MAX_SECONDS between tries) and then carries on: its message stays unacknowledged
meanwhile, and comes back by itself if the worker dies waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.backoff import delays

log = structlog.get_logger(__name__)

T = TypeVar("T")

REDIS_WAIT_FIRST_SECONDS = 0.5
REDIS_WAIT_MAX_SECONDS = 5.0


def until_redis_answers(
    work: Callable[[], T],
    *,
    event: str,
    sleep: Callable[[float], object] = time.sleep,
    **fields: object,
) -> T:
    """``work()``, tried again each time Redis does not answer; each wait is logged as
    ``event`` (a warning, with ``fields``, the error's name and the wait)."""
    waits = delays(base=REDIS_WAIT_FIRST_SECONDS, cap=REDIS_WAIT_MAX_SECONDS)
    while True:
        try:
            return work()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            wait = next(waits)
            log.warning(event, **fields, error=type(exc).__name__, retry_in=wait)
            sleep(wait)
