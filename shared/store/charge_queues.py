"""What waits in the charge queues: ``QUEUE_NAME`` and every client's queue together.

Each client's charges wait in a queue of their own (``keys.client_queue``), and the accept
script names each one it pushes to in ``keys.CLIENT_QUEUES``. The autoscaling signal, the
alarms and ``/metrics`` read every queue through here, so a payment counts wherever it waits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson
import redis
from redis.asyncio import Redis as AsyncRedis

from shared.store import keys
from shared.store.lua_scripts import source


@dataclass(frozen=True, slots=True)
class ChargeQueues:
    lengths: dict[str, int]  # messages waiting, by queue
    # The message at the head of the queue whose head has waited longest (None: all empty).
    oldest: bytes | None

    @property
    def ready(self) -> int:
        return sum(self.lengths.values())


@dataclass(frozen=True, slots=True)
class Reserved:
    """The messages workers hold (delivered, not yet acknowledged: running, prefetched, or
    waiting for a retry countdown), by what they are for."""

    charges: int  # from the charge queues: charges, and the refunds and captures beside them
    callbacks: int  # from the callback queue: not work for the charge workers' autoscaling


def _names(queue_name: str, members: Iterable[bytes | str]) -> list[str]:
    found = {m.decode() if isinstance(m, bytes) else m for m in members}
    return [queue_name, *sorted(found - {queue_name})]


def _stamp(message: bytes) -> int:
    """A message's ``enqueued_at`` (ms); 0 when it has none, so that it is shown first."""
    try:
        stamp = orjson.loads(message)["headers"].get("enqueued_at")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return 0
    return int(stamp) if str(stamp).isdigit() else 0


def _summary(names: Sequence[str], replies: Sequence[object]) -> ChargeQueues:
    lengths = {name: int(replies[2 * i]) for i, name in enumerate(names)}  # type: ignore[call-overload]
    heads = [head for head in replies[1::2] if isinstance(head, bytes)]
    return ChargeQueues(lengths, min(heads, key=_stamp) if heads else None)


def read(client: redis.Redis, queue_name: str) -> ChargeQueues:
    """Every charge queue's length and the longest-waiting head (two round trips)."""
    names = _names(queue_name, client.smembers(keys.CLIENT_QUEUES))
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(name)
            pipe.lindex(name, -1)  # pushed on the left, popped on the right: the oldest
        return _summary(names, pipe.execute())


async def read_async(client: AsyncRedis, queue_name: str) -> ChargeQueues:
    """``read`` for the API's event loop."""
    names = _names(queue_name, await client.smembers(keys.CLIENT_QUEUES))
    async with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(name)
            pipe.lindex(name, -1)
        return _summary(names, await pipe.execute())


def _reserved(counts: Sequence[object]) -> Reserved:
    return Reserved(int(counts[0]), int(counts[1]))  # type: ignore[call-overload]


# Reserved messages each looked at when counting them; past that many, a random sample of this
# size is (exact up to it; past it the total stays exact and the callbacks' share of it is
# within about 2 points, one standard error): 500 values of about 1 KB hold Redis about 2 ms,
# where all of 5,000 held it 17 ms.
RESERVED_LOOKED_AT = 500


def reserved(client: redis.Redis, callback_queue: str) -> Reserved:
    """kombu's ``unacked`` hash counted by the queue of each message (one script call; see
    RESERVED_LOOKED_AT)."""
    script = client.register_script(source("reserved"))
    return _reserved(script(keys=[keys.UNACKED], args=[callback_queue, RESERVED_LOOKED_AT]))


async def reserved_async(client: AsyncRedis, callback_queue: str) -> Reserved:
    """``reserved`` for the API's event loop."""
    script = client.register_script(source("reserved"))
    return _reserved(await script(keys=[keys.UNACKED], args=[callback_queue, RESERVED_LOOKED_AT]))
