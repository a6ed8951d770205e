"""The callbacks' recovery sweep (fakeredis): every script that pushes a callback message files
it; delivery, a retry, a dead letter take it out; a message lost between the transport's pop and
its unacked entry is sent again, once, and a message still in the queue or with a worker never
is. The receiver is an httpx.MockTransport."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import fakeredis
import httpx
import orjson
import pytest

from shared.callbacks.events import event_id, payment_callback, refund_callbacks
from shared.payments.payment_records import Status, new_record_fields
from shared.payments.refund_records import RefundStatus, refund_fingerprint
from shared.settings.service_settings import Settings
from shared.store import PaymentStore
from shared.store.callback_store import CallbackStore
from shared.store.keys import (
    CALLBACK_DEAD_LETTERS,
    CALLBACKS_PENDING,
    UNACKED,
    callback_key,
    record_key,
)
from shared.store.lifecycle_store import LifecycleStore, Transition
from shared.store.refund_store import AsyncRefundStore, RefundStore
from worker.callback_delivery import Callback, CallbackSender

SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
PAY = "pay_" + "e" * 24
AGE = 5  # CALLBACK_SWEEP_STALE_SECONDS
SETTINGS = Settings(
    environment="test",
    callback_signing_secrets=SECRET,
    callback_max_attempts=3,
    callback_sweep_stale_seconds=AGE,
)
EVT = event_id("payment.succeeded", PAY)


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


class Receiver:
    """A callback endpoint: answers the statuses it is given, in turn, then 200."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.ids: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.ids.append(request.headers["webhook-id"])
        return httpx.Response(self.statuses.pop(0) if self.statuses else 200)


def sender(redis: fakeredis.FakeRedis, receiver: Receiver) -> CallbackSender:
    return CallbackSender(
        CallbackStore(redis, SETTINGS), LifecycleStore(redis, SETTINGS),
        RefundStore(redis, SETTINGS), SETTINGS,
        http=httpx.Client(transport=httpx.MockTransport(receiver)),
        resolve=lambda host, port, allow_private: "93.184.216.34",
    )  # fmt: skip


def succeeded_with_callback(redis: fakeredis.FakeRedis) -> None:
    """A payment with an endpoint, charged: its payment.succeeded message is in the queue."""
    fields: dict[str, str] = new_record_fields(
        payment_id=PAY, account_id="cus_A", amount_minor=4299, currency="usd",
        payment_method="pm_1", idempotency_key="k", fingerprint="f",
    )  # fmt: skip
    fields["status"] = Status.PROCESSING.value
    fields["callback_url"] = "https://shop.example.com/hooks"
    redis.hset(record_key(PAY), mapping=fields)  # type: ignore[arg-type]
    assert PaymentStore(redis, SETTINGS).finish(PAY, status=Status.SUCCEEDED, fields={})


def work(redis: fakeredis.FakeRedis, send: CallbackSender) -> list[str]:
    """A worker draining the callback queue: each message's task run once; the outcomes."""
    outcomes = []
    while (raw := redis.rpop("callbacks")) is not None:
        message = orjson.loads(raw)  # type: ignore[arg-type]
        args = json.loads(base64.b64decode(message["body"]))[0]
        outcomes.append(send.send(Callback(*args)))
    return outcomes


def sweep(redis: fakeredis.FakeRedis, at: float, reserved: frozenset[str] = frozenset()) -> Any:
    store = PaymentStore(redis, SETTINGS)
    return CallbackStore(redis, SETTINGS).requeue_stale(
        queue_oldest_ms=store.queue_oldest_ms("callbacks"), reserved=set(reserved), now=at
    )


def later(n: int) -> float:
    """The n-th sweep round from now: each look puts the next one a stale age away."""
    return time.time() + 2 * AGE * n


def test_a_callback_lost_between_pop_and_unacked_is_sent_again_once(
    redis: fakeredis.FakeRedis,
) -> None:
    succeeded_with_callback(redis)
    (queued,) = redis.lrange("callbacks", 0, -1)
    redis.rpop("callbacks")  # popped by a worker, Redis died before its unacked entry
    receiver = Receiver()

    assert sweep(redis, time.time()) == []  # not yet: younger than the stale age
    assert sweep(redis, later(1)) == [EVT]
    (again,) = redis.lrange("callbacks", 0, -1)
    first, second = orjson.loads(queued), orjson.loads(again)
    assert second["headers"]["id"] == first["headers"]["id"] == f"{EVT}:1"
    assert second["body"] == first["body"]  # the same task, the same event
    assert second["headers"]["recovered"] is True
    assert second["properties"]["delivery_tag"] != first["properties"]["delivery_tag"]

    assert work(redis, sender(redis, receiver)) == ["delivered"]
    assert sweep(redis, later(2)) == []
    assert sweep(redis, later(3)) == []
    assert receiver.ids == [EVT]  # sent once
    assert redis.zcard(CALLBACKS_PENDING) == 0
    assert not redis.exists(callback_key(EVT))  # nothing left behind


def test_a_callback_still_queued_or_with_a_worker_is_never_pushed_again(
    redis: fakeredis.FakeRedis,
) -> None:
    succeeded_with_callback(redis)

    # In the queue, past the stale age: the queue has not moved past it.
    assert sweep(redis, later(1)) == []
    # Popped, and in kombu's unacked (a worker holds it).
    raw = redis.rpop("callbacks")
    assert isinstance(raw, bytes)
    redis.hset(UNACKED, "tag1", orjson.dumps([orjson.loads(raw), "", "callbacks"]))
    reserved = PaymentStore(redis, SETTINGS).reserved_task_ids()
    assert reserved == {f"{EVT}:1"}
    assert sweep(redis, later(2), frozenset(reserved)) == []
    # An attempt began (its unacked entry restored meanwhile, say): alive for a stale age.
    CallbackStore(redis, SETTINGS).attempt_started(EVT)
    assert sweep(redis, time.time() + AGE - 1 + 2 * AGE) == []
    assert redis.llen("callbacks") == 0


def test_a_backlog_older_than_the_stale_age_is_not_echoed(redis: fakeredis.FakeRedis) -> None:
    """Many callbacks waiting in the queue past the stale age: none pushed twice."""
    succeeded_with_callback(redis)
    lifecycle = LifecycleStore(redis, SETTINGS)
    lifecycle.transition(PAY, Transition(Status.DISPUTED, {}),
                         callback=payment_callback(SETTINGS, PAY, Status.DISPUTED))  # fmt: skip
    assert redis.llen("callbacks") == 2
    assert redis.zcard(CALLBACKS_PENDING) == 2

    for n in range(1, 4):
        assert sweep(redis, later(n)) == []
    assert redis.llen("callbacks") == 2
    assert work(redis, sender(redis, Receiver())) == ["delivered", "delivered"]
    assert redis.zcard(CALLBACKS_PENDING) == 0


def test_a_retry_and_a_dead_letter_leave_the_sweep_and_its_requeue_files_it_again(
    redis: fakeredis.FakeRedis,
) -> None:
    succeeded_with_callback(redis)
    receiver = Receiver(500, 500, 500)
    send = sender(redis, receiver)
    store = CallbackStore(redis, SETTINGS)

    assert work(redis, send) == ["retry"]
    assert store.pending() == []  # held in the retries set: not the sweep's
    assert sweep(redis, later(1)) == []
    assert store.requeue_due(now=later(2)) == 1  # its backoff (at most 10 s) is over
    assert store.pending() == [EVT]  # out again: filed again
    redis.rpop("callbacks")  # and lost in transit
    assert sweep(redis, later(2) + 1) == []  # filed at later(2): not stale yet
    assert sweep(redis, later(3)) == [EVT]
    assert work(redis, send) == ["retry"]
    assert store.requeue_due(now=later(6)) == 1
    assert work(redis, send) == ["dead_lettered"]

    assert store.pending() == []
    assert sweep(redis, later(8)) == []
    kept = redis.hgetall(callback_key(EVT))
    assert kept[b"attempts"] == b"3"
    assert b"message" not in kept  # the dead letter keeps only what replays it
    assert redis.zscore(CALLBACK_DEAD_LETTERS, EVT) is not None
    assert receiver.ids == [EVT, EVT, EVT]


async def test_refund_outcomes_file_both_callbacks() -> None:
    """refund_finish pushes two callbacks in one step (refund.succeeded, payment.refunded):
    each filed under its own event id."""
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeRedis(server=server)
    succeeded_with_callback(redis)
    work(redis, sender(redis, Receiver()))
    refund_id = "ref_" + "1" * 24
    claim = await AsyncRefundStore(fakeredis.FakeAsyncRedis(server=server), SETTINGS).claim(
        refund_id=refund_id, payment_id=PAY, amount_minor=None, message=b"{}",
        fields={"id": refund_id, "payment_id": PAY, "status": "pending", "currency": "usd",
                "idempotency_key": "r", "created_at": "2026-01-01T00:00:00.000Z",
                "updated_at": "2026-01-01T00:00:00.000Z", "attempts": "0",
                "fingerprint": refund_fingerprint(payment_id=PAY, amount_minor=None)},
    )  # fmt: skip
    assert claim.record is not None
    callbacks = refund_callbacks(SETTINGS, claim.record, RefundStatus.SUCCEEDED)
    finished = RefundStore(redis, SETTINGS).finish(
        claim.record, status=RefundStatus.SUCCEEDED, fields={}, callbacks=callbacks
    )

    assert finished == 2  # the payment is refunded too
    assert sorted(CallbackStore(redis, SETTINGS).pending()) == sorted(
        [event_id("refund.succeeded", refund_id), event_id("payment.refunded", PAY)]
    )
    redis.delete("callbacks")  # both lost in transit
    assert sorted(sweep(redis, later(1))) == sorted(CallbackStore(redis, SETTINGS).pending())
    assert sorted(work(redis, sender(redis, Receiver()))) == ["delivered", "delivered"]
    assert CallbackStore(redis, SETTINGS).pending() == []
