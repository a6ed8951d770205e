"""Deadlines and cancel on the workers' side: a payment still queued past its deadline is never
attempted and ends expired (when its message is taken, or by the maintenance round), one whose
attempt started is settled by its answer, and a canceled one is never attempted."""

from __future__ import annotations

import asyncio
import time

import fakeredis
import orjson
import pytest

from shared.payments.states import Status
from shared.settings.service_settings import Settings
from shared.store import PAST_DEADLINE, SKIP, PaymentStore, Started
from shared.store.keys import (
    DEADLINES,
    OUTCOME_COUNTS,
    PENDING_INDEX,
    client_backlog,
    lock_key,
    record_key,
)
from shared.store.stripe_budget_store import StripeBudgetStore
from shared.store.unsent_store import AsyncCancelStore
from shared.stripe.budget import StripeBudget
from tests.worker.conftest import seed_record
from tests.worker.test_charge import FakeStripe
from worker.attempts import Done
from worker.charge import ChargeProcessor

PAY = "pay_" + "a" * 24
HOOK = "https://shop.example.com/hooks"


@pytest.fixture
def settings() -> Settings:
    return Settings(environment="test")


@pytest.fixture
def store(redis: fakeredis.FakeRedis, settings: Settings) -> PaymentStore:
    return PaymentStore(redis, settings)


def _queued(
    redis: fakeredis.FakeRedis, *, deadline_in: float, payment_id: str = PAY, hook: str = ""
) -> int:
    """A queued payment of client ``c`` with a deadline ``deadline_in`` seconds from now, filed
    where the accept step files it; its deadline in ms."""
    expires_ms = int((time.time() + deadline_in) * 1000)
    seed_record(redis, payment_id, callback_url=hook or None, client="c",
                expires_ms=str(expires_ms))  # fmt: skip
    redis.zadd(DEADLINES, {payment_id: expires_ms})
    redis.zadd(PENDING_INDEX, {payment_id: 0})
    redis.set(client_backlog("c"), 1)
    return expires_ms


def _status(redis: fakeredis.FakeRedis, payment_id: str = PAY) -> str:
    return redis.hget(record_key(payment_id), "status").decode()  # type: ignore[union-attr]


def _error(redis: fakeredis.FakeRedis) -> dict[str, str]:
    error: dict[str, str] = orjson.loads(redis.hget(record_key(PAY), "error"))  # type: ignore[arg-type]
    return error


def test_a_payment_past_its_deadline_starts_no_attempt(
    redis: fakeredis.FakeRedis, store: PaymentStore
) -> None:
    _queued(redis, deadline_in=-1)
    assert store.start_attempt(PAY, token="t") is PAST_DEADLINE
    assert _status(redis) == "queued"
    assert not redis.exists(lock_key(PAY))


def test_a_payment_before_its_deadline_starts_as_any_other(
    redis: fakeredis.FakeRedis, store: PaymentStore
) -> None:
    _queued(redis, deadline_in=60)
    assert isinstance(store.start_attempt(PAY, token="t"), Started)


def test_the_worker_expires_a_payment_it_takes_past_its_deadline_and_never_calls_stripe(
    redis: fakeredis.FakeRedis, store: PaymentStore, settings: Settings
) -> None:
    _queued(redis, deadline_in=-1, hook=HOOK)
    stripe = FakeStripe()
    outcome = ChargeProcessor(store, stripe, settings).process(PAY)  # type: ignore[arg-type]

    assert outcome == Done(None)
    assert stripe.ledger == []
    assert stripe.customer_reads == 0
    assert _status(redis) == "expired"
    error = _error(redis)
    assert error["code"] == "payment_expired"
    assert "never sent to Stripe" in error["message"]
    # It leaves the backlog and the indexes, is counted, and its client is told.
    assert redis.zscore(PENDING_INDEX, PAY) is None
    assert redis.zscore(DEADLINES, PAY) is None
    assert redis.get(client_backlog("c")) == b"0"
    assert redis.hget(OUTCOME_COUNTS, "expired|payment_expired") == b"1"
    (message,) = redis.lrange(settings.callback_queue, 0, -1)
    assert b"payment.expired" in message


def test_an_attempt_started_before_the_deadline_is_settled_by_its_answer(
    redis: fakeredis.FakeRedis, store: PaymentStore, settings: Settings
) -> None:
    expires_ms = _queued(redis, deadline_in=60)
    assert isinstance(store.start_attempt(PAY, token="t"), Started)
    # The deadline passes while the attempt is at Stripe: the round leaves it alone.
    assert store.deadlines.expire_due(now_ms=expires_ms + 1) == []
    assert _status(redis) == "processing"
    assert redis.zscore(DEADLINES, PAY) is None  # no longer queued: no longer a deadline's
    store.finish(PAY, status=Status.SUCCEEDED, fields={"payment_intent": "pi_1"})
    assert _status(redis) == "succeeded"


def test_the_round_expires_every_queued_payment_past_its_deadline_and_only_those(
    redis: fakeredis.FakeRedis, store: PaymentStore
) -> None:
    due = [f"pay_{i:024x}" for i in range(3)]
    for payment_id in due:
        _queued(redis, deadline_in=-1, payment_id=payment_id)
    later = _queued(redis, deadline_in=60, payment_id="pay_" + "b" * 24)
    assert sorted(store.deadlines.expire_due()) == due
    assert [_status(redis, p) for p in due] == ["expired"] * 3
    assert _status(redis, "pay_" + "b" * 24) == "queued"
    assert redis.zscore(DEADLINES, "pay_" + "b" * 24) == later
    # The worker that takes an expired payment's message later finds it final.
    assert store.start_attempt(due[0], token="t") is SKIP


def test_a_replayed_dead_letter_that_expires_is_not_said_never_sent(
    redis: fakeredis.FakeRedis,
    server: fakeredis.FakeServer,
    store: PaymentStore,
    settings: Settings,
) -> None:
    """A payment queued again after attempts that reached Stripe (a replayed dead letter) was
    sent before: its expiry or cancel says no new charge was attempted, not "never sent"."""
    _queued(redis, deadline_in=-1)
    redis.hset(record_key(PAY), "attempts", "3")
    assert store.deadlines.expire_due() == [PAY]
    assert _error(redis)["code"] == "payment_expired"
    assert "never sent" not in _error(redis)["message"]
    assert "sent to Stripe again" in _error(redis)["message"]

    other = "pay_" + "c" * 24
    _queued(redis, deadline_in=60, payment_id=other)
    redis.hset(record_key(other), "attempts", "1")
    async_redis = fakeredis.FakeAsyncRedis(server=server)
    assert asyncio.run(AsyncCancelStore(async_redis, settings).cancel(other)).canceled
    error = orjson.loads(redis.hget(record_key(other), "error"))  # type: ignore[arg-type]
    assert error["code"] == "payment_canceled"
    assert "never sent" not in error["message"]

    fresh = "pay_" + "d" * 24
    _queued(redis, deadline_in=-1, payment_id=fresh)
    assert store.deadlines.expire([fresh]) == [fresh]
    error = orjson.loads(redis.hget(record_key(fresh), "error"))  # type: ignore[arg-type]
    assert "never sent to Stripe" in error["message"]


def test_the_round_leaves_a_queued_payment_a_worker_holds(
    redis: fakeredis.FakeRedis, store: PaymentStore
) -> None:
    _queued(redis, deadline_in=-1)
    redis.set(lock_key(PAY), "someone")
    assert store.deadlines.expire_due() == []
    assert _status(redis) == "queued"
    assert redis.zscore(DEADLINES, PAY) is not None  # looked at again next round


def test_expiry_and_an_attempt_exclude_each_other(
    redis: fakeredis.FakeRedis, store: PaymentStore
) -> None:
    """Whichever runs first wins: expired first, the attempt finds it final; started first
    (before the deadline), the expiry finds it no longer queued."""
    expires_ms = _queued(redis, deadline_in=-1)
    assert store.deadlines.expire([PAY], now_ms=expires_ms) == [PAY]
    assert store.start_attempt(PAY, token="t") is SKIP

    redis.flushall()
    expires_ms = _queued(redis, deadline_in=1)
    assert isinstance(store.start_attempt(PAY, token="t", now=expires_ms / 1000 - 0.5), Started)
    assert store.deadlines.expire([PAY], now_ms=expires_ms + 1) == []
    assert _status(redis) == "processing"


def test_a_canceled_payment_is_never_attempted(
    redis: fakeredis.FakeRedis,
    server: fakeredis.FakeServer,
    store: PaymentStore,
    settings: Settings,
) -> None:
    _queued(redis, deadline_in=60)
    async_redis = fakeredis.FakeAsyncRedis(server=server)
    result = asyncio.run(AsyncCancelStore(async_redis, settings).cancel(PAY))
    assert result.canceled
    stripe = FakeStripe()
    assert ChargeProcessor(store, stripe, settings).process(PAY) == Done(None)  # type: ignore[arg-type]
    assert stripe.ledger == []
    assert _status(redis) == "canceled"


def test_cancel_and_an_attempt_exclude_each_other(
    redis: fakeredis.FakeRedis,
    server: fakeredis.FakeServer,
    store: PaymentStore,
    settings: Settings,
) -> None:
    """An attempt started first: the cancel is refused (the record says processing); a cancel
    first: the attempt finds it final."""
    async_redis = fakeredis.FakeAsyncRedis(server=server)
    cancels = AsyncCancelStore(async_redis, settings)
    _queued(redis, deadline_in=60)
    assert isinstance(store.start_attempt(PAY, token="t"), Started)
    refused = asyncio.run(cancels.cancel(PAY))
    assert not refused.canceled
    assert not refused.already
    assert refused.record is not None
    assert refused.record.status is Status.PROCESSING

    redis.flushall()
    _queued(redis, deadline_in=60)
    assert asyncio.run(cancels.cancel(PAY)).canceled
    assert store.start_attempt(PAY, token="t") is SKIP
    again = asyncio.run(cancels.cancel(PAY))
    assert again.already
    assert not again.canceled


def test_a_queued_payment_a_worker_holds_is_not_canceled(
    redis: fakeredis.FakeRedis, server: fakeredis.FakeServer, settings: Settings
) -> None:
    async_redis = fakeredis.FakeAsyncRedis(server=server)
    _queued(redis, deadline_in=60)
    redis.set(lock_key(PAY), "someone")
    result = asyncio.run(AsyncCancelStore(async_redis, settings).cancel(PAY))
    assert not result.canceled
    assert _status(redis) == "queued"


def _backlogged(
    redis: fakeredis.FakeRedis, store: PaymentStore, settings: Settings
) -> ChargeProcessor:
    """A processor whose Stripe budget other workers have booked for the next 0.6 s."""
    shared = StripeBudgetStore(redis)
    limits = Settings(environment="test", stripe_max_rps=20).stripe_limits
    shared.book(["GET /v1/events"] * 12, {"global": 20, "GET /v1/events": 25})
    return ChargeProcessor(store, FakeStripe(), settings, StripeBudget(shared, limits))  # type: ignore[arg-type]


def test_a_first_create_whose_slot_comes_past_the_deadline_is_never_sent(
    redis: fakeredis.FakeRedis, store: PaymentStore, settings: Settings
) -> None:
    _queued(redis, deadline_in=0.3, hook=HOOK)
    processor = _backlogged(redis, store, settings)

    assert processor.process(PAY) == Done(None)

    stripe: FakeStripe = processor._gateway  # type: ignore[assignment]
    assert stripe.ledger == []  # the create waited for its slot past the deadline: not sent
    assert _status(redis) == "expired"
    assert "never sent to Stripe" in _error(redis)["message"]
    assert not redis.exists(lock_key(PAY))
    assert redis.zscore(PENDING_INDEX, PAY) is None
    (message,) = redis.lrange(settings.callback_queue, 0, -1)
    assert b"payment.expired" in message


def test_a_later_attempt_past_the_deadline_still_sends_its_create(
    redis: fakeredis.FakeRedis, store: PaymentStore, settings: Settings
) -> None:
    """An earlier attempt may have reached Stripe: the same create (same idempotency key) is
    what learns its outcome, so the deadline does not stop it."""
    _queued(redis, deadline_in=0.3)
    redis.hset(record_key(PAY), "attempts", "1")  # an earlier attempt ended without an answer
    processor = _backlogged(redis, store, settings)

    assert processor.process(PAY) == Done(Status.SUCCEEDED)

    stripe: FakeStripe = processor._gateway  # type: ignore[assignment]
    assert len(stripe.ledger) == 1
    assert _status(redis) == "succeeded"


@pytest.mark.parametrize(
    ("token", "fields"),
    [
        ("other", {}),  # another worker's lease
        ("t", {"attempts": "2"}),  # an earlier attempt may have reached Stripe
        ("t", {"payment_intent": "pi_1"}),  # its create was sent
        ("t", {"reconcile_first": "1"}),  # a replayed dead letter: sent before
    ],
)
def test_a_held_payment_that_may_have_been_sent_is_never_expired(
    redis: fakeredis.FakeRedis, store: PaymentStore, token: str, fields: dict[str, str]
) -> None:
    expires_ms = _queued(redis, deadline_in=60)
    assert isinstance(store.start_attempt(PAY, token="t"), Started)
    if fields:
        redis.hset(record_key(PAY), mapping=fields)  # type: ignore[arg-type]

    assert store.deadlines.expire([PAY], now_ms=expires_ms + 1, token=token) == []
    assert _status(redis) == "processing"
    assert redis.get(lock_key(PAY)) == b"t"
