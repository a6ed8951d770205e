"""GroupCommit: script calls of one event-loop tick share a pipeline, each caller gets its own
answer or its own error, NOSCRIPT loads the script, a lost connection reaches every caller."""

from __future__ import annotations

import asyncio
from enum import IntEnum
from typing import Any

import fakeredis
import hiredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from api.group_commit import GroupCommit, _Call, _pack_each, _pack_evalsha
from shared.payments.states import Status

# Increments KEYS[1] by ARGV[1] and answers {the new value, ARGV[2]}; fails on demand.
SCRIPT = """
if ARGV[2] == 'boom' then
  return redis.error_reply('boom asked for')
end
local value = redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))
return {value, ARGV[2]}
"""


class ErrorKind(IntEnum):
    FIVE = 5


@pytest.fixture
def redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis()


class CountingRedis:
    """Wraps a client and counts what is written to Redis: each write's number of commands
    (``singles``: writes of one command; ``pipelines``: the sizes of the others)."""

    def __init__(self, inner: fakeredis.FakeAsyncRedis) -> None:
        self.inner = inner
        self.writes: list[int] = []
        self.fail_next = False
        self.connection_pool = _CountingPool(self)

    @property
    def singles(self) -> int:
        return self.writes.count(1)

    @property
    def pipelines(self) -> list[int]:
        return [n for n in self.writes if n > 1]

    async def script_load(self, source: str) -> Any:
        return await self.inner.script_load(source)


class _CountingPool:
    def __init__(self, outer: CountingRedis) -> None:
        self.outer = outer
        self.inner = outer.inner.connection_pool

    async def get_connection(self) -> Any:
        connection = await self.inner.get_connection()
        outer = self.outer
        original = connection.send_packed_command

        async def send_packed_command(command: bytes, check_health: bool = True) -> None:
            outer.writes.append(command.count(b"$7\r\nEVALSHA\r\n"))
            if outer.fail_next:
                raise RedisConnectionError("connection lost")
            await original(command, check_health)

        connection.send_packed_command = send_packed_command
        return connection

    async def release(self, connection: Any) -> None:
        del connection.send_packed_command  # the connection's own again
        await self.inner.release(connection)


async def test_calls_of_one_tick_share_one_pipeline_and_each_gets_its_own_answer(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    counting = CountingRedis(redis)
    group = GroupCommit(counting)  # type: ignore[arg-type]
    script = group.script(SCRIPT)
    await redis.script_load(SCRIPT)
    results = await asyncio.gather(
        *(script(keys=[f"k{i % 3}"], args=[i, f"caller-{i}"]) for i in range(10))
    )
    assert [r[1] for r in results] == [f"caller-{i}".encode() for i in range(10)]
    # The first call found nothing in flight and went at once; the nine made while it was on
    # its way share one round trip.
    assert counting.singles == 1
    assert counting.pipelines == [9]
    assert group.stats.direct == 1
    # Each script ran whole, in call order: the counters add up.
    assert await redis.get("k0") == str(0 + 3 + 6 + 9).encode()
    assert sorted(r[0] for r in results if r[1].endswith((b"-0", b"-3", b"-6", b"-9"))) == [
        0,
        3,
        9,
        18,
    ]


async def test_a_lone_call_is_a_plain_evalsha(redis: fakeredis.FakeAsyncRedis) -> None:
    counting = CountingRedis(redis)
    group = GroupCommit(counting)  # type: ignore[arg-type]
    assert await group.run(SCRIPT, keys=["solo"], args=[5, "x"]) == [5, b"x"]
    assert counting.pipelines == []
    assert counting.singles >= 1


async def test_calls_of_different_ticks_are_not_held_back(redis: fakeredis.FakeAsyncRedis) -> None:
    counting = CountingRedis(redis)
    group = GroupCommit(counting)  # type: ignore[arg-type]
    script = group.script(SCRIPT)
    await redis.script_load(SCRIPT)
    assert await script(keys=["a"], args=[1, "first"]) == [1, b"first"]
    assert await script(keys=["a"], args=[1, "second"]) == [2, b"second"]
    assert counting.singles == 2
    assert group.stats.direct == 2  # an idle helper sends at once, waiting for no tick


async def test_an_error_reaches_only_its_own_caller(redis: fakeredis.FakeAsyncRedis) -> None:
    group = GroupCommit(redis)
    script = group.script(SCRIPT)
    results = await asyncio.gather(
        script(keys=["e"], args=[1, "ok-1"]),
        script(keys=["e"], args=[1, "boom"]),
        script(keys=["e"], args=[1, "ok-2"]),
        return_exceptions=True,
    )
    assert results[0] == [1, b"ok-1"]
    assert isinstance(results[1], ResponseError)
    assert "boom asked for" in str(results[1])
    assert results[2] == [2, b"ok-2"]
    assert group.stats.pipelined_batches >= 1


async def test_a_lone_failing_call_gets_its_error(redis: fakeredis.FakeAsyncRedis) -> None:
    group = GroupCommit(redis)
    with pytest.raises(ResponseError, match="boom asked for"):
        await group.run(SCRIPT, keys=["e"], args=[1, "boom"])


async def test_noscript_loads_the_script_and_runs_the_calls_again(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    group = GroupCommit(redis)
    script = group.script(SCRIPT)
    await redis.script_flush()  # as after a Redis restart: the script cache is empty
    results = await asyncio.gather(*(script(keys=["n"], args=[1, f"c{i}"]) for i in range(4)))
    assert sorted(r[0] for r in results) == [1, 2, 3, 4]
    assert [r[1] for r in results] == [b"c0", b"c1", b"c2", b"c3"]
    assert group.stats.script_loads == 1
    await redis.script_flush()
    assert await script(keys=["n"], args=[1, "lone"]) == [5, b"lone"]
    assert group.stats.script_loads == 2


async def test_an_unknown_sha_is_noscript_for_its_caller(redis: fakeredis.FakeAsyncRedis) -> None:
    group = GroupCommit(redis)
    with pytest.raises(NoScriptError):
        await group.evalsha("0" * 40, ["k"], [1, "x"])


async def test_a_lost_connection_reaches_every_caller_of_the_batch(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    counting = CountingRedis(redis)
    group = GroupCommit(counting)  # type: ignore[arg-type]
    script = group.script(SCRIPT)
    counting.fail_next = True
    results = await asyncio.gather(
        *(script(keys=["c"], args=[1, str(i)]) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RedisConnectionError) for r in results)
    counting.fail_next = False
    assert await script(keys=["c"], args=[1, "after"]) == [1, b"after"]


async def test_a_cancelled_caller_does_not_disturb_the_others(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    group = GroupCommit(redis)
    script = group.script(SCRIPT)
    callers = [asyncio.ensure_future(script(keys=["x"], args=[1, name])) for name in "abc"]
    await asyncio.sleep(0)  # "a" went at once, "b" and "c" are queued for the next tick
    callers[1].cancel()
    assert (await callers[0])[1] == b"a"
    assert (await callers[2])[1] == b"c"
    with pytest.raises(asyncio.CancelledError):
        await callers[1]
    await group.aclose()


async def test_batches_are_capped(redis: fakeredis.FakeAsyncRedis) -> None:
    counting = CountingRedis(redis)
    group = GroupCommit(counting, max_batch=4)  # type: ignore[arg-type]
    script = group.script(SCRIPT)
    await redis.script_load(SCRIPT)
    results = await asyncio.gather(*(script(keys=["m"], args=[1, str(i)]) for i in range(10)))
    assert sorted(r[0] for r in results) == list(range(1, 11))
    assert sorted(counting.pipelines) == [1, 4, 4] or sorted(counting.pipelines) == [4, 4]
    assert group.stats.largest_batch == 4


def test_max_batch_must_be_positive(redis: fakeredis.FakeAsyncRedis) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit(redis, max_batch=0)


async def test_a_client_whose_registered_scripts_share_round_trips(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    from api.group_commit import GroupedScriptsClient

    client = GroupedScriptsClient(redis)
    script = client.register_script(SCRIPT)
    results = await asyncio.gather(*(script(keys=["g"], args=[1, str(i)]) for i in range(5)))
    assert sorted(r[0] for r in results) == [1, 2, 3, 4, 5]
    assert client.group.stats.calls == 5
    assert client.group.stats.direct == 1  # the first went at once, the four others together
    assert client.group.stats.batches == 1
    await client.set("plain", "command")  # everything else is the client's own
    assert await client.get("plain") == b"command"


async def test_with_one_batch_in_flight_the_calls_made_meanwhile_go_together(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    counting = CountingRedis(redis)
    group = GroupCommit(counting, max_in_flight=1)  # type: ignore[arg-type]
    script = group.script(SCRIPT)
    await redis.script_load(SCRIPT)
    first = asyncio.ensure_future(script(keys=["f"], args=[1, "first"]))
    await asyncio.sleep(0)  # "first" is on its way (direct)
    later = [asyncio.ensure_future(script(keys=["f"], args=[1, f"l{i}"])) for i in range(3)]
    more: list[asyncio.Future[Any]] = []
    for _ in range(3):  # ticks pass while "first" is in flight: nothing else is sent
        await asyncio.sleep(0)
        more.append(asyncio.ensure_future(script(keys=["f"], args=[1, f"m{len(more)}"])))
    results = await asyncio.gather(first, *later, *more)
    assert [r[1] for r in results] == [b"first", b"l0", b"l1", b"l2", b"m0", b"m1", b"m2"]
    assert sorted(r[0] for r in results) == list(range(1, 8))
    assert group.stats.direct == 1
    assert group.stats.batches <= 2  # the six waited and went in one or two batches
    assert group.stats.largest_batch >= 3


def test_max_in_flight_must_be_positive(redis: fakeredis.FakeAsyncRedis) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        GroupCommit(redis, max_in_flight=0)


@pytest.mark.parametrize(
    "args",
    [
        ["queued", "", "é ü 中", "x\x00y", b"raw\r\n", b"", 0, -3, 2**63, 0.1, 1e20, -0.0, 4299],
        [str(i) * (i % 7) for i in range(2_000)],
        [True, False, 1.5],  # bools: hiredis refuses them, the loop packs them as 1 and 0
        [Status.QUEUED, ErrorKind.FIVE, 2],  # enum members: str and int subclasses
    ],
)
def test_evalsha_is_packed_as_redis_reads_a_multi_bulk(args: list[Any]) -> None:
    call = _Call("a" * 40, None, ["key:1", "key:2"], args)
    packed = _pack_evalsha(call)
    assert packed == _pack_each(("EVALSHA", call.sha, 2, *call.keys, *call.args))
    reader = hiredis.Reader()
    reader.feed(packed)
    parts = reader.gets()
    assert parts[:4] == [b"EVALSHA", b"a" * 40, b"2", b"key:1"]
    assert len(parts) == 5 + len(args)
