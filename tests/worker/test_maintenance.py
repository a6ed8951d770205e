"""The recovery sweep brings back a payment whose message was lost, and nothing else: not one
still waiting in the queue (however long the backlog), held by a worker, or final."""

from __future__ import annotations

import json
import time

import fakeredis
import pytest

from shared.payments.states import Status
from shared.settings.service_settings import Settings
from shared.store import PaymentStore
from shared.store.keys import PENDING_INDEX, lock_key
from tests.worker.conftest import seed_record

QUEUE = "payments"


@pytest.fixture
def settings() -> Settings:
    return Settings(environment="test", sweep_stale_seconds=600)


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def store(client: fakeredis.FakeRedis, settings: Settings) -> PaymentStore:
    return PaymentStore(client, settings)


def pending(
    client: fakeredis.FakeRedis,
    payment_id: str,
    status: str,
    due: float,
    *,
    enqueued_ms: int,
    in_queue: bool = False,
    queue: str | None = None,
) -> None:
    """A pending payment; ``queue``: the client queue its record names (else none, as
    records written before charges had a queue a client: QUEUE_NAME)."""
    named = {"queue": queue} if queue else {}
    seed_record(client, payment_id, Status(status), amount_minor=100, payment_method=None,
                enqueued_at=str(enqueued_ms), **named)  # fmt: skip
    client.zadd(PENDING_INDEX, {payment_id: due})
    if in_queue:
        message = {"headers": {"id": payment_id, "enqueued_at": enqueued_ms}}
        client.lpush(queue or QUEUE, json.dumps(message))


def test_a_lost_message_is_enqueued_again_and_a_recent_payment_is_not(
    client: fakeredis.FakeRedis, store: PaymentStore
) -> None:
    now = time.time()
    old = int((now - 900) * 1000)
    pending(client, "pay_lost", "queued", due=now - 1, enqueued_ms=old)
    pending(client, "pay_recent", "queued", due=now + 300, enqueued_ms=int(now * 1000))

    assert store.requeue_stale(now=now) == ["pay_lost"]

    (message,) = client.lrange(QUEUE, 0, -1)
    assert json.loads(message)["headers"]["id"] == "pay_lost"
    assert client.zscore(PENDING_INDEX, "pay_lost") == int(now) + 600  # looked at again later


def test_a_payment_being_charged_or_finished_is_left_alone(
    client: fakeredis.FakeRedis, store: PaymentStore
) -> None:
    now = time.time()
    old = int((now - 900) * 1000)
    pending(client, "pay_busy", "processing", due=now - 1, enqueued_ms=old)
    client.set(lock_key("pay_busy"), "worker-1")
    pending(client, "pay_done", "succeeded", due=now - 1, enqueued_ms=old)
    pending(client, "pay_unknown", "unknown", due=now - 1, enqueued_ms=old)

    assert store.requeue_stale(now=now) == []
    assert client.llen(QUEUE) == 0
    assert client.zscore(PENDING_INDEX, "pay_done") is None
    assert client.zscore(PENDING_INDEX, "pay_unknown") is None  # the reconciler's now
    assert client.zscore(PENDING_INDEX, "pay_busy") is not None


def test_a_long_backlog_older_than_the_sweep_age_is_never_echoed(
    client: fakeredis.FakeRedis, store: PaymentStore
) -> None:
    now = time.time()
    start = int((now - 3600) * 1000)
    for n in range(2_000):  # an hour-old backlog, still in the queue
        pending(client, f"pay_{n}", "queued", due=now - 1, enqueued_ms=start + n, in_queue=True)

    for _ in range(5):
        assert store.requeue_stale(now=now) == []
    assert client.llen(QUEUE) == 2_000

    # Workers take all but the newest ten: those are still queued, the rest were delivered.
    for n in range(1_990):
        client.rpop(QUEUE)
        client.zrem(PENDING_INDEX, f"pay_{n}")
    assert store.requeue_stale(now=now) == []
    assert client.llen(QUEUE) == 10


def test_each_payment_is_looked_for_in_its_own_clients_queue(
    client: fakeredis.FakeRedis, store: PaymentStore
) -> None:
    now = time.time()
    start = int((now - 3600) * 1000)
    # A greedy client's hour-old backlog; the calm client's queue has moved on.
    for n in range(50):
        pending(client, f"pay_g{n}", "queued", due=now - 1, enqueued_ms=start + n,
                in_queue=True, queue="payments.greedy")  # fmt: skip
    pending(client, "pay_lost", "queued", due=now - 1, enqueued_ms=start, queue="payments.calm")
    pending(client, "pay_next", "queued", due=now + 600, enqueued_ms=start + 60_000,
            in_queue=True, queue="payments.calm")  # fmt: skip

    assert store.requeue_stale(now=now) == ["pay_lost"]  # none of the greedy backlog

    assert client.llen("payments.greedy") == 50
    assert client.llen(QUEUE) == 0
    newest = json.loads(client.lindex("payments.calm", 0))  # type: ignore[arg-type]
    assert newest["headers"]["id"] == "pay_lost"  # back in its own client's queue
    assert newest["properties"]["delivery_info"]["routing_key"] == "payments.calm"


def test_a_popped_message_is_recovered_once_the_queue_has_moved_past_it(
    client: fakeredis.FakeRedis, store: PaymentStore
) -> None:
    now = time.time()
    start = int((now - 3600) * 1000)
    pending(client, "pay_dropped", "queued", due=now - 1, enqueued_ms=start, in_queue=True)
    pending(client, "pay_next", "queued", due=now + 600, enqueued_ms=start + 60_000,
            in_queue=True)  # fmt: skip
    client.rpop(QUEUE)  # popped by a worker that crashed before recording it

    assert store.requeue_stale(now=now) == ["pay_dropped"]


def test_a_worker_waiting_for_the_stripe_budget_keeps_its_payment(
    client: fakeredis.FakeRedis, store: PaymentStore
) -> None:
    now = time.time()
    pending(client, "pay_waiting", "processing", due=now - 1,
            enqueued_ms=int((now - 900) * 1000))  # fmt: skip
    client.set(lock_key("pay_waiting"), "token", px=1000)
    assert store.heartbeat("pay_waiting", token="token", delivery_tag=None)
    client.delete(lock_key("pay_waiting"))  # even between the lease's lapses, alive_at counts

    assert store.requeue_stale(now=now) == []


def test_a_message_reserved_by_a_worker_but_not_started_is_not_echoed(
    client: fakeredis.FakeRedis, store: PaymentStore
) -> None:
    now = time.time()
    pending(client, "pay_reserved", "queued", due=now - 1, enqueued_ms=int((now - 900) * 1000))
    # kombu keeps a delivered message in its unacked hash until the task acknowledges it.
    delivered = [{"headers": {"id": "pay_reserved"}}, "", "payments"]
    client.hset("unacked", "tag-1", json.dumps(delivered))

    assert store.requeue_stale(now=now) == []
    assert client.llen(QUEUE) == 0
