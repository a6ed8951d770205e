"""The reserved messages as the scaling signal counts them: a charge worker's held charges in,
the callbacks a slow receiver holds out; exactly up to RESERVED_LOOKED_AT, then by a sample
that never holds Redis for the whole hash."""

from __future__ import annotations

import json

import fakeredis
import pytest

from shared.store import charge_queues
from shared.store.charge_queues import RESERVED_LOOKED_AT, Reserved
from shared.store.keys import UNACKED


def hold(redis: fakeredis.FakeRedis, charges: int, callbacks: int) -> None:
    """Reserved messages as kombu keeps them: [message, exchange, routing key]."""
    for i in range(charges):
        redis.hset(UNACKED, f"c{i}", json.dumps([{"body": "…"}, "", "payments.acme"]))
    for i in range(callbacks):
        redis.hset(UNACKED, f"cb{i}", json.dumps([{"body": "…"}, "", "callbacks"]))


def test_up_to_the_bound_each_reserved_message_is_counted_by_its_queue() -> None:
    redis = fakeredis.FakeRedis()
    hold(redis, RESERVED_LOOKED_AT - 40, 40)
    assert charge_queues.reserved(redis, "callbacks") == Reserved(RESERVED_LOOKED_AT - 40, 40)


def test_past_the_bound_the_callbacks_share_is_estimated_and_the_total_stays_exact() -> None:
    redis = fakeredis.FakeRedis()
    hold(redis, 3_000, 1_000)
    counted = charge_queues.reserved(redis, "callbacks")
    assert counted.charges + counted.callbacks == 4_000
    # 500 drawn: the share is 25 % give or take 2 points (one standard error), so the estimate
    # is 1,000 give or take 80; not scaled to the whole, it would be about 125.
    assert counted.callbacks == pytest.approx(1_000, abs=400)


async def test_the_api_counts_the_same() -> None:
    sync, server = fakeredis.FakeRedis(), fakeredis.FakeServer()
    hold(fakeredis.FakeRedis(server=server), 12, 3)
    hold(sync, 12, 3)
    async_counted = await charge_queues.reserved_async(
        fakeredis.FakeAsyncRedis(server=server), "callbacks"
    )
    assert async_counted == charge_queues.reserved(sync, "callbacks") == Reserved(12, 3)
