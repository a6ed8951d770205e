"""``?wait=N``: wake a waiting request as soon as a worker finishes its payment.

One Redis subscription per API process (not one per request) listens on the events channel; a
worker publishes the payment id when it writes a final status. The record stays the source of
truth: a waiter re-reads it when woken and at least once a second, so a missed event (the
subscription reconnecting, say) costs at most a second, never a wrong answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.store.keys import EVENTS_CHANNEL

log = structlog.get_logger(__name__)


class Settles(Protocol):
    """A record a request may wait for: a payment, or a refund (``?wait`` on refunds too)."""

    @property
    def is_settled(self) -> bool: ...


R = TypeVar("R", bound=Settles)
RECHECK_SECONDS = 1.0
POLL_SECONDS = 0.25


class PaymentWaiter:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="payment-events")

    async def stop(self) -> None:
        if self._task is not None:
            # redis-py may swallow a cancellation inside a read; the flag ends the loop anyway.
            self._stopping = True
            self._task.cancel()
            # Bounded: a subscription stuck closing must not hold up shutdown.
            await asyncio.wait({self._task}, timeout=2)
            self._task = None

    async def _listen(self) -> None:
        while not self._stopping:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(EVENTS_CHANNEL)
                    while not self._stopping:
                        message = await pubsub.get_message(timeout=POLL_SECONDS)
                        data = message.get("data") if message else None
                        if isinstance(data, bytes):
                            self._wake(data.decode())
            except (RedisError, OSError) as exc:
                log.warning("payment_events.disconnected", error=exc.__class__.__name__)
                await asyncio.sleep(0.5)

    def _wake(self, payment_id: str) -> None:
        for future in self._waiters.pop(payment_id, ()):
            if not future.done():
                future.set_result(None)

    async def wait(
        self,
        payment_id: str,
        within: float,
        fetch: Callable[[], Awaitable[R]],
    ) -> R:
        """The record once settled (final or unknown), or as it stands after ``within`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(payment_id, set()).add(future)
            try:
                record = await fetch()
                remaining = deadline - loop.time()
                if record.is_settled or remaining <= 0:
                    return record
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(future, min(remaining, RECHECK_SECONDS))
            finally:
                waiting = self._waiters.get(payment_id)
                if waiting is not None:
                    waiting.discard(future)
                    if not waiting:
                        del self._waiters[payment_id]
