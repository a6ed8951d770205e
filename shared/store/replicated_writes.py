"""Accepted means replicated (issue 13): a script's writes, then ``WAIT``, on one connection.

``WAIT n timeout`` blocks until ``n`` replicas acknowledged every write the *same connection*
made before it. So the script goes in one non-transactional pipeline with a fence write
(``INCR payments:fence``: the WAIT then also covers writes made earlier by anyone, such as the
record a replay finds) and the ``WAIT``. The calls made in one event-loop tick share that
pipeline, and so one ``WAIT``, as the group commit (``api/group_commit.py``) shares a round trip
between scripts: under load the replica's acknowledgement is waited for once per batch, not
once per request.

Each caller gets its own answer: its script's error, or ``NotDurable`` when fewer than ``n``
replicas acknowledged within the timeout (the write may stand on the primary alone; the client
retries with the same Idempotency-Key), or its script's result. A connection error reaches every
caller of the batch it hit. ``NOSCRIPT`` (a new or restarted primary after a failover) loads the
script and runs only the refused calls again.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from shared.errors import NotDurable
from shared.store import keys

Arg = str | bytes | int | float


class ReplicatedScript:
    """``await script(keys=[...], args=[...])``, answered once ``replicas`` replicas hold the
    script's writes (else NotDurable)."""

    def __init__(self, client: Redis, source: str, *, replicas: int, timeout_ms: int) -> None:
        self._redis = client
        self._source = source
        self._sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self._replicas = replicas
        self._timeout_ms = timeout_ms
        self._pending: list[tuple[Sequence[Arg], Sequence[Arg], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # for tests and the benchmark

    async def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((keys, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, batch: list[tuple[Sequence[Arg], Sequence[Arg], asyncio.Future[Any]]]
    ) -> None:
        try:
            results, acked = await self._send([(k, a) for k, a, _ in batch])
            refused = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
            if refused:
                await self._redis.script_load(self._source)
                again, acked = await self._send([(batch[i][0], batch[i][1]) for i in refused])
                for i, result in zip(refused, again, strict=True):
                    results[i] = result
        except BaseException as exc:  # connection lost, timeout, cancelled: every caller hears
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            elif acked < self._replicas:
                future.set_exception(NotDurable(replicas=acked))
            else:
                future.set_result(result)

    async def _send(
        self, calls: list[tuple[Sequence[Arg], Sequence[Arg]]]
    ) -> tuple[list[Any], int]:
        """The scripts, the fence and the WAIT in one pipeline: their results and how many
        replicas acknowledged."""
        self.batches += 1
        pipe = self._redis.pipeline(transaction=False)
        for keys_, args in calls:
            pipe.evalsha(self._sha, len(keys_), *keys_, *args)
        pipe.incr(keys.DURABILITY_FENCE)
        pipe.wait(self._replicas, self._timeout_ms)
        *results, fence, acked = await pipe.execute(raise_on_error=False)
        for answer in (fence, acked):
            if isinstance(answer, Exception):
                raise answer
        return list(results), int(acked)
