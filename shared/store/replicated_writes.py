"""Accepted means replicated: a script's writes, then ``WAIT``, on one connection.

``WAIT n timeout`` blocks until ``n`` replicas acknowledged every write the *same connection*
made before it. So the script goes in one non-transactional pipeline with a fence write
(``INCR payments:fence``: the WAIT then also covers writes made earlier by anyone, such as the
record a replay finds) and the ``WAIT``. The calls made in one event-loop tick share that
pipeline, and so one ``WAIT`` (``shared.store.tick_batcher``, the batching under the group
commit too): under load the replica's acknowledgement is waited for once per batch, not once
per request.

Each caller gets its own answer: its script's error, or ``NotDurable`` when fewer than ``n``
replicas acknowledged within the timeout (the write may stand on the primary alone; the client
retries with the same Idempotency-Key), or its script's result. A connection error reaches every
caller of the batch it hit. ``NOSCRIPT`` (a new or restarted primary after a failover) loads the
script and runs only the refused calls again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from shared.errors import NotDurable
from shared.store import keys
from shared.store.tick_batcher import TickBatcher

Arg = str | bytes | int | float
Call = tuple[Sequence[Arg], Sequence[Arg]]  # the script's keys and args


class ReplicatedScript:
    """``await script(keys=[...], args=[...])``, answered once ``replicas`` replicas hold the
    script's writes (else NotDurable)."""

    def __init__(self, client: Redis, source: str, *, replicas: int, timeout_ms: int) -> None:
        self._redis = client
        self._source = source
        self._sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self._replicas = replicas
        self._timeout_ms = timeout_ms
        self._batches = TickBatcher(self._run)
        self.stats = self._batches.stats  # for tests and the benchmark

    async def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        return await self._batches.submit((keys, args))

    async def _run(self, calls: list[Call]) -> list[Any]:
        """Each call's result, its own error, or NotDurable when too few replicas acknowledged.
        NOSCRIPT loads the script and runs only the refused calls again."""
        results, acked = await self._send(calls)
        refused = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if refused:
            await self._redis.script_load(self._source)
            again, acked = await self._send([calls[i] for i in refused])
            for i, result in zip(refused, again, strict=True):
                results[i] = result
        if acked < self._replicas:
            return [r if isinstance(r, Exception) else NotDurable(replicas=acked) for r in results]
        return results

    async def _send(self, calls: list[Call]) -> tuple[list[Any], int]:
        """The scripts, the fence and the WAIT in one pipeline: their results and how many
        replicas acknowledged."""
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
