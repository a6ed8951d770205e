"""Calls made during one event-loop tick, sent together at the next: the batching under the
API's group commit (``api/group_commit.py``) and the replicated accept
(``shared/store/replicated_writes.py``).

Under load many requests reach their Redis step in the same turn of the event loop. A
:class:`TickBatcher` queues them and, at the next tick (``loop.call_soon``), hands them to its
``send`` as one batch; ``send`` answers one result per call, in order, and the batcher gives each
caller its own: a result, or an exception instance returned in its place (that call's own error,
the others unharmed). An exception ``send`` raises (a lost connection, a timeout, a cancellation)
reaches every caller of the batch. A call never waits longer than the next tick for its batch to
leave, unless ``max_in_flight`` batches are already on their way (then it goes with the next one
to leave when one returns).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Call = TypeVar("Call")


@dataclass(slots=True)
class BatchStats:
    """What a batcher did, for tests and the benchmark."""

    calls: int = 0
    direct: int = 0  # sent at once (direct_when_idle)
    batches: int = 0  # sent a tick later, together
    largest_batch: int = 0
    sizes: dict[int, int] = field(default_factory=dict)


class TickBatcher(Generic[Call]):
    def __init__(
        self,
        send: Callable[[list[Call]], Awaitable[list[Any]]],
        *,
        max_batch: int | None = None,
        max_in_flight: int | None = None,
        direct_when_idle: bool = False,
        stats: BatchStats | None = None,
    ) -> None:
        """``max_batch``: at most this many calls a batch. ``max_in_flight``: at most this many
        batches (and direct calls) on their way at once; calls made meanwhile wait for one to
        return and then go together (bigger batches under load, at most one round trip more of
        waiting). ``None``: no bound. ``direct_when_idle``: a call that finds nothing queued and
        nothing on its way is sent at once, as a batch of its own (it has no one to share a
        round trip with, so no tick to wait for)."""
        if max_batch is not None and max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._send = send
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._direct_when_idle = direct_when_idle
        # The calls queued for the next batch and their callers' futures, index for index.
        self._pending: list[Call] = []
        self._futures: list[asyncio.Future[Any]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self.stats = stats if stats is not None else BatchStats()

    def submit(self, call: Call) -> Awaitable[Any]:
        """The call's answer, once the batch it goes with (the next tick's, or its own when
        sent at once) returns."""
        if self._direct_when_idle and self._in_flight == 0 and not self._pending:
            return self._now(call)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(call)
        self._futures.append(future)
        if not self._scheduled:
            self._schedule(loop)
        return future

    async def _now(self, call: Call) -> Any:
        self._in_flight += 1
        stats = self.stats
        stats.calls += 1
        stats.direct += 1
        try:
            (result,) = await self._send([call])
        finally:
            self._in_flight -= 1
            self._schedule()
        if isinstance(result, Exception):
            raise result
        return result

    async def aclose(self) -> None:
        """Wait for the batches queued and in flight."""
        while self._tasks or self._pending:
            self._schedule()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.sleep(0)

    def _room(self) -> int:
        if self._max_in_flight is None:
            return len(self._pending)
        return self._max_in_flight - self._in_flight

    def _schedule(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not self._scheduled and self._pending and self._room() > 0:
            self._scheduled = True
            (loop or asyncio.get_running_loop()).call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._pending and self._room() > 0:
            calls, futures = self._pending, self._futures
            if self._max_batch is None or len(calls) <= self._max_batch:
                self._pending, self._futures = [], []
            else:
                cut = self._max_batch
                calls, self._pending = calls[:cut], calls[cut:]
                futures, self._futures = futures[:cut], futures[cut:]
            self._in_flight += 1  # counted now: the room left is for the next batch
            task = loop.create_task(self._run(calls, futures))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, calls: list[Call], futures: list[asyncio.Future[Any]]) -> None:
        stats = self.stats
        size = len(calls)
        stats.calls += size
        stats.batches += 1
        stats.largest_batch = max(stats.largest_batch, size)
        stats.sizes[size] = stats.sizes.get(size, 0) + 1
        try:
            results = await self._send(calls)
        except BaseException as exc:  # connection lost, timeout, cancelled: every caller hears
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._in_flight -= 1
            self._schedule()
        for future, result in zip(futures, results, strict=True):
            if future.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
