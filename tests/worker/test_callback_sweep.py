"""The callbacks' recovery sweep (fakeredis): every script that pushes a callback message files
it (a state change, a retry's move back, a replay); delivery, a skip, a retry, a dead letter take
it out; a message lost between the transport's pop and its unacked entry is sent again, once,
and a message still in the queue (the queue has not moved past it, clock skew allowed), with a
worker or whose attempt just began never is. The receiver is an httpx.MockTransport."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any
from unittest.mock import patch

import fakeredis
import orjson
import pytest

from shared.callbacks.events import event_id, payment_callback, refund_callbacks
from shared.payments.refund_records import refund_fingerprint
from shared.payments.states import RefundStatus, Status
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
from tests.worker.conftest import MakeSender, Receiver, SeedPayment
from worker.callback_delivery import Callback, CallbackSender, Deferred
from worker.dead_letters import main as dead_letters

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
Charge = Callable[[], None]


@pytest.fixture
def send(make_sender: MakeSender) -> CallbackSender:
    return make_sender(SETTINGS)


@pytest.fixture
def succeeded_with_callback(redis: fakeredis.FakeRedis, seed_payment: SeedPayment) -> Charge:
    """A payment with an endpoint, charged: its payment.succeeded message is in the queue."""

    def charge() -> None:
        seed_payment(PAY, Status.PROCESSING, callback_url="https://shop.example.com/hooks")
        assert PaymentStore(redis, SETTINGS).finish(PAY, status=Status.SUCCEEDED, fields={})

    return charge


def work(redis: fakeredis.FakeRedis, send: CallbackSender) -> list[str]:
    """A worker draining the callback queue: each message's task run once; the outcomes."""
    outcomes: list[str] = []
    while (raw := redis.rpop("callbacks")) is not None:
        message = orjson.loads(raw)  # type: ignore[arg-type]
        args = json.loads(base64.b64decode(message["body"]))[0]
        outcome = send.send(Callback(*args))
        assert not isinstance(outcome, Deferred)  # one at a time: a slot is always free
        outcomes.append(outcome)
    return outcomes


def sweep(redis: fakeredis.FakeRedis, at: float, reserved: frozenset[str] = frozenset()) -> Any:
    store = PaymentStore(redis, SETTINGS)
    return CallbackStore(redis, SETTINGS).requeue_stale(
        queue_oldest_ms=store.queue_oldest_ms("callbacks"), reserved=set(reserved), now=at
    )


def later(n: int) -> float:
    """The n-th sweep round from now: each look puts the next one a stale age away."""
    return time.time() + 2 * AGE * n


def dispute(redis: fakeredis.FakeRedis) -> None:
    """The payment moves on: its payment.disputed callback is queued and filed."""
    LifecycleStore(redis, SETTINGS).transition(
        PAY, Transition(Status.DISPUTED, {}),
        callback=payment_callback(SETTINGS, PAY, Status.DISPUTED),
    )  # fmt: skip


def another_queued(redis: fakeredis.FakeRedis, enqueued_ms: int) -> None:
    """Another payment's callback waits in the queue, stamped ``enqueued_ms`` by its producer's
    clock; the only message there."""
    message = orjson.loads(payment_callback(SETTINGS, "pay_" + "f" * 24, Status.SUCCEEDED))
    message["headers"]["enqueued_at"] = enqueued_ms
    redis.delete("callbacks")
    redis.lpush("callbacks", orjson.dumps(message))


def with_attempt_begun_at(redis: fakeredis.FakeRedis, at: float) -> None:
    """A worker began an attempt at ``at`` (by its clock)."""
    with patch("time.time", return_value=at):
        CallbackStore(redis, SETTINGS).attempt_started(EVT)


def test_a_callback_lost_between_pop_and_unacked_is_sent_again_once(
    redis: fakeredis.FakeRedis, succeeded_with_callback: Charge, receiver: Receiver,
    send: CallbackSender,
) -> None:  # fmt: skip
    succeeded_with_callback()
    (queued,) = redis.lrange("callbacks", 0, -1)
    redis.rpop("callbacks")  # popped by a worker, Redis died before its unacked entry

    assert sweep(redis, time.time()) == []  # not yet: younger than the stale age
    assert sweep(redis, later(1)) == [EVT]
    (again,) = redis.lrange("callbacks", 0, -1)
    first, second = orjson.loads(queued), orjson.loads(again)
    assert second["headers"]["id"] == first["headers"]["id"] == f"{EVT}:1"
    assert second["body"] == first["body"]  # the same task, the same event
    assert second["headers"]["recovered"] is True
    assert second["properties"]["delivery_tag"] != first["properties"]["delivery_tag"]

    assert work(redis, send) == ["delivered"]
    assert sweep(redis, later(2)) == []
    assert sweep(redis, later(3)) == []
    assert receiver.ids == [EVT]  # sent once
    assert redis.zcard(CALLBACKS_PENDING) == 0
    assert not redis.exists(callback_key(EVT))  # nothing left behind


def test_a_callback_still_queued_or_with_a_worker_is_never_pushed_again(
    redis: fakeredis.FakeRedis, succeeded_with_callback: Charge
) -> None:
    succeeded_with_callback()

    # In the queue, past the stale age: the queue has not moved past it.
    assert sweep(redis, later(1)) == []
    # Popped, and in kombu's unacked (a worker holds it).
    raw = redis.rpop("callbacks")
    assert isinstance(raw, bytes)
    redis.hset(UNACKED, "tag1", orjson.dumps([orjson.loads(raw), "", "callbacks"]))
    reserved = PaymentStore(redis, SETTINGS).reserved_task_ids()
    assert reserved == {f"{EVT}:1"}
    assert sweep(redis, later(2), frozenset(reserved)) == []
    assert redis.llen("callbacks") == 0


def test_an_attempt_just_begun_is_not_pushed_again(
    redis: fakeredis.FakeRedis, succeeded_with_callback: Charge
) -> None:
    """Out of the queue and of kombu's unacked (restored by another worker's sweep, say), but
    its attempt began less than a stale age ago: alive."""
    succeeded_with_callback()
    redis.rpop("callbacks")
    at = later(1)
    with_attempt_begun_at(redis, at - AGE + 1)
    assert sweep(redis, at) == []
    # A stale age after its attempt began with no outcome, it is lost after all.
    assert sweep(redis, later(3)) == [EVT]


def test_a_backlog_older_than_the_stale_age_is_not_echoed(
    redis: fakeredis.FakeRedis, succeeded_with_callback: Charge, send: CallbackSender
) -> None:
    """Many callbacks waiting in the queue past the stale age: none pushed twice."""
    succeeded_with_callback()
    dispute(redis)
    assert redis.llen("callbacks") == 2
    assert redis.zcard(CALLBACKS_PENDING) == 2

    for n in range(1, 4):
        assert sweep(redis, later(n)) == []
    assert redis.llen("callbacks") == 2
    assert work(redis, send) == ["delivered", "delivered"]
    assert redis.zcard(CALLBACKS_PENDING) == 0


def test_the_queue_has_moved_past_a_callback_only_beyond_the_clock_skew(
    redis: fakeredis.FakeRedis, succeeded_with_callback: Charge
) -> None:
    """The queue's oldest message stamped less than 5 s after the lost one's push may come from
    a clock running ahead, pushed before it: the sweep cannot tell, so it waits."""
    succeeded_with_callback()
    lost = redis.rpop("callbacks")
    assert isinstance(lost, bytes)
    pushed_ms = int(orjson.loads(lost)["headers"]["enqueued_at"])

    another_queued(redis, pushed_ms + 4_000)
    assert sweep(redis, later(1)) == []
    another_queued(redis, pushed_ms + 6_000)
    assert sweep(redis, later(2)) == [EVT]


def test_a_skipped_callback_leaves_the_sweep(
    redis: fakeredis.FakeRedis, succeeded_with_callback: Charge, receiver: Receiver,
    send: CallbackSender,
) -> None:  # fmt: skip
    """A callback whose payment is gone by its attempt (its record expired) is skipped, and
    the sweep never sends it again."""
    succeeded_with_callback()
    redis.delete(record_key(PAY))

    assert work(redis, send) == ["skipped"]
    for n in range(1, 4):
        assert sweep(redis, later(n)) == []
    assert receiver.requests == []
    assert CallbackStore(redis, SETTINGS).pending() == []


def test_a_retry_and_a_dead_letter_leave_the_sweep_and_its_requeue_files_it_again(
    redis: fakeredis.FakeRedis, succeeded_with_callback: Charge, receiver: Receiver,
    send: CallbackSender,
) -> None:  # fmt: skip
    succeeded_with_callback()
    receiver.statuses = [500, 500, 500]
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


def test_a_replayed_dead_letter_is_filed_again_and_sent_again_if_lost(
    redis: fakeredis.FakeRedis, succeeded_with_callback: Charge, receiver: Receiver,
    make_sender: MakeSender, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    succeeded_with_callback()
    receiver.statuses = [500]
    one_attempt = SETTINGS.model_copy(update={"callback_max_attempts": 1})
    assert work(redis, make_sender(one_attempt)) == ["dead_lettered"]
    assert CallbackStore(redis, SETTINGS).pending() == []

    # An operator replays it: `python -m worker.dead_letters replay <event id>`.
    monkeypatch.setattr("worker.dead_letters.get_settings", lambda: SETTINGS)
    monkeypatch.setattr("worker.dead_letters.sync_redis", lambda settings: redis)
    assert dead_letters(["replay", EVT]) == 0
    redis.rpop("callbacks")  # and its message is lost in transit

    assert sweep(redis, later(1)) == [EVT]
    assert work(redis, make_sender(SETTINGS)) == ["delivered"]
    assert receiver.ids == [EVT, EVT]
    assert CallbackStore(redis, SETTINGS).pending() == []


async def test_refund_outcomes_file_both_callbacks(
    server: fakeredis.FakeServer, redis: fakeredis.FakeRedis,
    succeeded_with_callback: Charge, send: CallbackSender,
) -> None:  # fmt: skip
    """refund_finish pushes two callbacks in one step (refund.succeeded, payment.refunded):
    each filed under its own event id."""
    succeeded_with_callback()
    work(redis, send)
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
    assert sorted(work(redis, send)) == ["delivered", "delivered"]
    assert CallbackStore(redis, SETTINGS).pending() == []
