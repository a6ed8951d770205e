"""Group commit: the Lua script calls made in one event-loop tick share one Redis round trip.

Under load many requests reach their Redis step in the same turn of the event loop. Sent one by
one through redis-py's asyncio client, every call pays for a pooled connection, a write, a
timeout, a wake-up and a parse of its own, which costs about as much CPU as a whole bare HTTP
request. :class:`GroupCommit` queues the calls made during one tick and, at the next tick
(``loop.call_soon``, through ``shared.store.tick_batcher``), sends them as one
non-transactional pipeline of ``EVALSHA`` commands:

- each script stays atomic on its own (Redis runs a script whole, pipelined or not); the batch
  is not a transaction, so a failing call fails alone;
- each caller gets its own answer, or its own exception;
- a call never waits longer than the next tick: nothing is held back to fill a batch, and a
  call made while nothing else is on its way to Redis is sent at once (at low load the helper
  costs nothing: there is no one to share a round trip with);
- a batch of one is sent as a plain ``EVALSHA`` (no pipeline overhead);
- ``NOSCRIPT`` (a restarted or flushed Redis) loads the script and runs the refused calls again;
- a connection or timeout error reaches every caller of the batch it hit.

Usage::

    group = GroupCommit(redis)
    accept = group.script(ACCEPT_SCRIPT)        # same call shape as redis.register_script()
    result = await accept(keys=[...], args=[...])
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from shared.store.tick_batcher import BatchStats, TickBatcher

Arg = str | bytes | int | float
# hiredis' stub gives the command's tuple one item; it takes any number.
_hiredis_pack = cast("Callable[[tuple[Arg, ...]], bytes]", hiredis.pack_command)


@dataclass(slots=True)
class _Call:
    sha: str
    source: str | None
    keys: Sequence[Arg]
    args: Sequence[Arg]


@dataclass(slots=True)
class GroupCommitStats(BatchStats):
    """What the helper did, for tests and the benchmark."""

    pipelined_batches: int = 0
    script_loads: int = 0


class GroupCommit:
    """Batches ``EVALSHA`` calls made in the same event-loop tick into one pipeline."""

    def __init__(
        self, redis: Redis, *, max_batch: int = 512, max_in_flight: int | None = None
    ) -> None:
        """``max_in_flight``: at most this many batches (and direct calls) on their way to Redis
        at once; calls made meanwhile wait for one to return and then go together (the classic
        group commit: bigger batches under load, at most one round trip more of waiting).
        ``None``: every tick's batch goes at once."""
        self._redis = redis
        self._sources: dict[str, str] = {}
        self.stats = GroupCommitStats()
        # A call made while nothing else is on its way to Redis goes at once.
        self._batches = TickBatcher(
            self._run_scripts,
            max_batch=max_batch,
            max_in_flight=max_in_flight,
            direct_when_idle=True,
            stats=self.stats,
        )

    def script(self, source: str) -> GroupedScript:
        """A callable ``await s(keys=[...], args=[...])``, like ``Redis.register_script``."""
        sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self._sources[sha] = source
        return GroupedScript(self, sha)

    async def evalsha(self, sha: str, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        """Run the script ``sha`` (its source is loaded on NOSCRIPT when :meth:`script` or
        :meth:`run` registered it) in the next batch; its own result, or its own error."""
        return await self._batches.submit(_Call(sha, self._sources.get(sha), keys, args))

    async def run(self, source: str, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        """Run the script ``source`` in the next batch."""
        return await self.script(source)(keys=keys, args=args)

    async def aclose(self) -> None:
        """Wait for the batches in flight."""
        await self._batches.aclose()

    async def _run_scripts(self, batch: list[_Call]) -> list[Any]:
        """The batch's results; a script Redis did not know (NOSCRIPT) is loaded and only the
        refused calls run again."""
        results = await self._send(batch)
        retry = [
            (i, call)
            for i, (call, result) in enumerate(zip(batch, results, strict=True))
            if isinstance(result, NoScriptError) and call.source is not None
        ]
        if retry:
            await self._load({call.sha: call.source for _, call in retry if call.source})
            again = await self._send([call for _, call in retry])
            for (i, _), result in zip(retry, again, strict=True):
                results[i] = result
        return results

    async def _send(self, batch: list[_Call]) -> list[Any]:
        """The batch's ``EVALSHA`` commands in one write on one pooled connection, then their
        replies in order: what redis-py's non-transactional pipeline does, without building a
        pipeline object and packing argument by argument (a measurable share of an accept's
        CPU). The connection, its authentication, TLS, Sentinel discovery and retry are still
        redis-py's: a connection error or timeout disconnects and retries the whole batch, as
        the pipeline does (every script is safe to run again: a claim already made answers as
        a replay)."""
        if len(batch) > 1:
            self.stats.pipelined_batches += 1
        packed = b"".join([_pack_evalsha(call) for call in batch])
        pool: Any = self._redis.connection_pool  # get_connection() is untyped in redis-py
        connection = await pool.get_connection()
        try:
            results: list[Any] = await connection.retry.call_with_retry(
                lambda: _exchange(connection, packed, len(batch)),
                lambda error: connection.disconnect(),
            )
        finally:
            await pool.release(connection)
        return results

    async def _load(self, sources: dict[str, str]) -> None:
        for sha, source in sources.items():
            loaded = await self._redis.script_load(source)
            self.stats.script_loads += 1
            if isinstance(loaded, bytes):
                loaded = loaded.decode()
            if loaded != sha:  # pragma: no cover - Redis hashes with SHA1 as we do
                raise RuntimeError(f"Redis loaded the script as {loaded}, expected {sha}")


def _pack_evalsha(call: _Call) -> bytes:
    """``EVALSHA sha numkeys key... arg...`` in RESP (a multi-bulk of bulk strings): packed by
    hiredis (redis-py's own packer when it has hiredis), a batch's thousands of arguments in a
    fraction of the time a loop here takes; the loop for what hiredis refuses (a bool, an int
    or float subclass), which it packs the same way."""
    command = ("EVALSHA", call.sha, len(call.keys), *call.keys, *call.args)
    try:
        return _hiredis_pack(command)
    except TypeError:
        return _pack_each(command)


def _pack_each(command: Sequence[Arg]) -> bytes:
    out = [b"*%d\r\n" % len(command)]
    for part in command:
        if isinstance(part, str):
            raw = part.encode()
        elif isinstance(part, bytes):
            raw = part
        elif isinstance(part, int):
            raw = b"%d" % part
        else:  # float: as redis-py encodes it
            raw = repr(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


async def _exchange(connection: Any, packed: bytes, replies: int) -> list[Any]:
    await connection.send_packed_command(packed)
    results: list[Any] = []
    for _ in range(replies):
        try:
            results.append(await connection.read_response())
        except ResponseError as exc:  # this call's own error (NOSCRIPT, a script's error)
            results.append(exc)
    return results


class GroupedScript:
    """One script run through a :class:`GroupCommit`; called like redis-py's ``AsyncScript``."""

    __slots__ = ("_group", "sha")

    def __init__(self, group: GroupCommit, sha: str) -> None:
        self._group = group
        self.sha = sha

    async def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        return await self._group.evalsha(self.sha, keys, args)


class GroupedScriptsClient:
    """A Redis client whose ``register_script`` runs the script through a :class:`GroupCommit`;
    every other attribute is the wrapped client's. Lets code that registers its scripts on a
    client (``shared.store.AsyncPaymentStore``) use the group commit unchanged."""

    def __init__(self, client: Redis, group: GroupCommit | None = None) -> None:
        self._client = client
        self.group = group or GroupCommit(client)

    def register_script(self, source: str) -> GroupedScript:
        return self.group.script(source)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
