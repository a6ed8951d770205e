"""The recovery sweep brings back a payment whose message was lost, and nothing else."""

from __future__ import annotations

import json
import time

import fakeredis
import pytest

from shared.config import Settings
from shared.records import PENDING, lock_key, new_record_fields, record_key
from worker.maintenance import sweep


@pytest.fixture
def settings() -> Settings:
    return Settings(environment="test", sweep_stale_seconds=600)


def pending(client: fakeredis.FakeRedis, payment_id: str, status: str, due: float) -> None:
    fields = new_record_fields(
        payment_id=payment_id,
        account_id="cus_A",
        amount_minor=100,
        currency="usd",
        payment_method=None,
        idempotency_key=f"k-{payment_id}",
        fingerprint="f" * 64,
    )
    fields["status"] = status
    client.hset(record_key(payment_id), mapping=fields)  # type: ignore[arg-type]
    client.zadd(PENDING, {payment_id: due})


def test_a_stale_payment_nobody_holds_is_enqueued_again(settings: Settings) -> None:
    client = fakeredis.FakeRedis()
    now = time.time()
    pending(client, "pay_lost", "queued", due=now - 1)
    pending(client, "pay_recent", "queued", due=now + 300)

    assert sweep(client, settings, now=now) == ["pay_lost"]

    (message,) = client.lrange("payments", 0, -1)
    assert json.loads(message)["headers"]["id"] == "pay_lost"
    assert client.zscore(PENDING, "pay_lost") == int(now) + 600  # looked at again later


def test_a_payment_being_charged_or_finished_is_left_alone(settings: Settings) -> None:
    client = fakeredis.FakeRedis()
    now = time.time()
    pending(client, "pay_busy", "processing", due=now - 1)
    client.set(lock_key("pay_busy"), "worker-1")
    pending(client, "pay_done", "succeeded", due=now - 1)

    assert sweep(client, settings, now=now) == []
    assert client.llen("payments") == 0
    assert client.zscore(PENDING, "pay_done") is None
    assert client.zscore(PENDING, "pay_busy") is not None
