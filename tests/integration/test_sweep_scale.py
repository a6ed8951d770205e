"""The recovery sweep against a real Redis holding a 50,000-payment backlog older than the
sweep's age: no message is echoed, and a round costs Redis work bounded independently of the
backlog's length."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from devtools.processes import ProcessGroup, free_port, redis_server_argv, wait_for_port
from shared.celery_message import charge_message
from shared.payments.payment_records import new_record_fields
from shared.settings.service_settings import Settings
from shared.store import PaymentStore
from shared.store.keys import PENDING_INDEX, record_key
from shared.store.payment_store import SWEEP_BATCH

pytestmark = pytest.mark.integration

QUEUE = "payments"


@pytest.fixture
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    group = ProcessGroup(tmp_path_factory.mktemp("sweep-scale-logs"))
    port = free_port()
    try:
        proc = group.start("redis", redis_server_argv(port, tmp_path_factory.mktemp("data")))
        wait_for_port(port, proc=proc)
        yield redis.Redis(port=port)
    finally:
        group.stop_all()


def backlog(client: redis.Redis, count: int, *, enqueued_ms: int, due: float) -> list[str]:
    ids = [f"pay_{n:024x}" for n in range(count)]
    with client.pipeline(transaction=False) as pipe:
        for n, payment_id in enumerate(ids):
            fields = new_record_fields(
                payment_id=payment_id,
                account_id="cus_A",
                amount_minor=100,
                currency="usd",
                payment_method=None,
                idempotency_key=f"k{n}",
                fingerprint="f" * 64,
            )
            fields["enqueued_at"] = str(enqueued_ms + n)
            pipe.hset(record_key(payment_id), mapping=fields)  # type: ignore[arg-type]
            pipe.zadd(PENDING_INDEX, {payment_id: due})
            message = charge_message(payment_id, queue=QUEUE,
                                     headers={"enqueued_at": enqueued_ms + n})  # fmt: skip
            pipe.lpush(QUEUE, message)
        pipe.execute()
    return ids


def commands(client: redis.Redis) -> int:
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return sum(v["calls"] for v in stats.values())


def test_a_50k_backlog_older_than_the_sweep_age_is_never_echoed(client: redis.Redis) -> None:
    store = PaymentStore(client, Settings(environment="test", sweep_stale_seconds=30))
    now = time.time()
    ids = backlog(client, 50_000, enqueued_ms=int((now - 3600) * 1000), due=now - 1)

    costs = []
    for _ in range(5):
        before = commands(client)
        assert store.requeue_stale(now=now) == []
        costs.append(commands(client) - before - 1)  # minus the INFO itself
    assert client.llen(QUEUE) == 50_000
    # Workers drain all but the newest 100: the rest are still queued, never echoed.
    with client.pipeline(transaction=False) as pipe:
        for payment_id in ids[:-100]:
            pipe.rpop(QUEUE)
            pipe.zrem(PENDING_INDEX, payment_id)
        pipe.execute()
    assert store.requeue_stale(now=now + 60) == []
    assert client.llen(QUEUE) == 100

    # One round: the due batch, each due payment's queue (one HGET each, pipelined), the tail of
    # each of those queues, the reserved set, then one script for each of at most SWEEP_BATCH
    # payments: a bound set by SWEEP_BATCH, whatever the backlog's size.
    assert max(costs) <= SWEEP_BATCH * 6 + 5
    print(f"\n[sweep] 50,000 queued payments past the sweep age: 0 echoed in 5 rounds, "
          f"{max(costs)} Redis commands a round")  # fmt: skip
