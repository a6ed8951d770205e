"""The state machine is the scripts' only source of moves: every Lua script is run against
records in every status, and every status change it makes must be a row of the table (and every
row must be one a script makes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import product

import fakeredis
import pytest

from shared.payments.payment_records import new_record_fields
from shared.payments.states import (
    PAYMENT_INITIAL,
    PAYMENT_MOVES,
    REFUND_INITIAL,
    REFUND_MOVES,
    CaptureStatus,
    RefundStatus,
    Status,
)
from shared.settings.service_settings import Settings
from shared.store import AsyncPaymentStore, PaymentStore
from shared.store.capture_store import AsyncCaptureStore, CaptureStore
from shared.store.keys import (
    CAPTURES_PENDING,
    DEAD_LETTERS,
    PENDING_INDEX,
    REFUNDS_PENDING,
    client_customers,
    client_listed,
    client_status,
    lock_key,
    record_key,
    refund_key,
)
from shared.store.lifecycle_store import LifecycleStore, Transition
from shared.store.list_store import ListBackfill
from shared.store.lua_scripts import LUA_DIR
from shared.store.payment_store import ClientLimits
from shared.store.refund_store import AsyncRefundStore, RefundStore
from shared.store.unsent_store import AsyncCancelStore

PAY, NEW_PAY = "pay_" + "a" * 24, "pay_" + "c" * 24
REF, NEW_REF = "ref_" + "b" * 24, "ref_" + "d" * 24
AMOUNT = 4299
DAY = 24 * 3600

# Scripts that hold no payment or refund record (budgets, Stripe's events, callbacks).
NO_RECORDS = {
    "list_page",  # reads records, writes nothing
    "book_stripe",
    "stripe_throttled",
    "stripe_event",
    "events_catchup_progress",
    "take_token",
    "callback_alive",
    "replay_callback",
    "requeue_callback",
    "requeue_callbacks",
    "take_callback_lease",
    "release_callback_lease",
    "reserved",  # counts kombu's unacked messages by queue
}


@dataclass
class Stores:
    redis: fakeredis.FakeRedis
    payments: PaymentStore
    lifecycle: LifecycleStore
    refunds: RefundStore
    async_payments: AsyncPaymentStore
    async_refunds: AsyncRefundStore
    async_cancels: AsyncCancelStore
    captures: CaptureStore
    async_captures: AsyncCaptureStore


Driver = Callable[[Stores], object]


def _accept(s: Stores) -> object:
    fields = new_record_fields(payment_id=NEW_PAY, account_id="cus_A", amount_minor=AMOUNT,
                               currency="usd", payment_method=None, idempotency_key="k2",
                               fingerprint="f" * 64, client="c")  # fmt: skip
    limits = ClientLimits("c", 0, 1, 1000)
    return asyncio.run(s.async_payments.claim_and_enqueue(fields=fields, headers={}, limits=limits))


def _accept_batch(s: Stores) -> object:
    fields = new_record_fields(payment_id=NEW_PAY, account_id="cus_A", amount_minor=AMOUNT,
                               currency="usd", payment_method=None, idempotency_key="k2",
                               fingerprint="f" * 64, client="c")  # fmt: skip
    limits = ClientLimits("c", 0, 1, 1000)
    return asyncio.run(s.async_payments.claim_many([fields, None], headers={}, limits=limits))


def _claim_refund(s: Stores) -> object:
    fields = {"id": NEW_REF, "payment_id": PAY, "status": REFUND_INITIAL.value,
              "currency": "usd", "idempotency_key": "r2", "fingerprint": "f" * 64,
              "created_at": "2026-01-01T00:00:00Z"}  # fmt: skip
    return asyncio.run(s.async_refunds.claim(refund_id=NEW_REF, payment_id=PAY, amount_minor=1,
                                             fields=fields, message=b"{}"))  # fmt: skip


def _finish(status: Status) -> Driver:
    return lambda s: s.payments.finish(PAY, status=status, fields={}, check_at=time.time())


def _transition(status: Status) -> Driver:
    return lambda s: s.lifecycle.transition(PAY, Transition(status, {}))


def _refund_finish(status: RefundStatus) -> Driver:
    def run(s: Stores) -> object:
        record = s.refunds.get(REF)
        assert record is not None
        return s.refunds.finish(record, status=status, fields={}, check_at=time.time())

    return run


def _capture_accept(s: Stores) -> object:
    return asyncio.run(s.async_captures.ask(payment_id=PAY, action="capture", ask="capture:all",
                                            amount_minor=None, message=b"{}"))  # fmt: skip


def _capture_finish(to: Status) -> Driver:
    return lambda s: s.captures.finish(PAY, status=CaptureStatus.SUCCEEDED, fields={}, to=to)


def _requeue_capture(s: Stores) -> object:
    s.redis.zadd(CAPTURES_PENDING, {PAY: 0})
    return s.captures.requeue_stale(queue_oldest_ms=-1, reserved=set(), now=time.time() + 3600)


def _requeue_refund(s: Stores) -> object:
    return s.refunds.requeue_stale(queue_oldest_ms=-1, reserved=set(), now=time.time() + 3600)


# Each script, run as its store runs it; a script whose target is an argument is run with
# every status as its target.
def _expire_held(s: Stores) -> None:
    """A worker's first attempt whose create waited past the deadline, not sent."""
    s.redis.set(lock_key(PAY), "t")
    s.redis.hset(record_key(PAY), "attempts", "1")
    s.redis.hdel(record_key(PAY), "payment_intent")  # its create was not sent
    s.payments.deadlines.expire([PAY], now_ms=int(time.time() + 2 * DAY) * 1000, token="t")


DRIVERS: dict[str, list[Driver]] = {
    "accept": [_accept, _accept_batch],
    "start_attempt": [lambda s: s.payments.start_attempt(PAY, token="t")],
    "take_lease": [lambda s: s.payments.take_lease(PAY, token="t")],
    "heartbeat": [lambda s: s.payments.heartbeat(PAY, token="t", delivery_tag=None)],
    "release": [lambda s: s.payments.release(PAY, token="t", fields={"charge": "ch_1"})],
    "finish": [_finish(to) for to in Status],
    "postpone_check": [lambda s: s.payments.postpone_check(PAY, token="t", check_at=0)],
    "requeue_stale": [lambda s: s.payments.requeue_stale(now=time.time() + 3600)],
    "replay": [lambda s: s.payments.replay(PAY)],
    "transition": [_transition(to) for to in Status],
    "stripe_refunds": [
        lambda s: s.lifecycle.record_stripe_refunds(PAY, stripe_refunded_minor=AMOUNT)
    ],
    "claim_refund": [_claim_refund],
    "refund_start": [lambda s: s.refunds.start(REF, token="t")],
    "refund_finish": [_refund_finish(to) for to in RefundStatus],
    "requeue_refund": [_requeue_refund],
    # Past the seeded deadline (a day from now).
    "expire": [
        lambda s: s.payments.deadlines.expire([PAY], now_ms=int(time.time() + 2 * DAY) * 1000),
        _expire_held,
    ],
    "cancel": [lambda s: asyncio.run(s.async_cancels.cancel(PAY))],
    "capture_accept": [_capture_accept],
    "capture_start": [lambda s: s.captures.start(PAY, token="t")],
    "capture_finish": [_capture_finish(to) for to in Status],
    "requeue_capture": [_requeue_capture],
    # Files a record of before the lists in them: never moves its status.
    "index_existing": [lambda s: ListBackfill(s.redis).run()],
}
# What a step needs besides the record (its fields written before the step runs): a capture or
# void asked and not settled.
PREPARED = {
    "capture_start": {"capture_action": "capture", "capture_status": "pending"},
    "capture_finish": {"capture_action": "capture", "capture_status": "pending"},
    "requeue_capture": {"capture_action": "capture", "capture_status": "pending"},
}

# What a script's moves depend on: a payment's status (every other script), a refund's, or both.
REFUND_ONLY = {"refund_start", "requeue_refund"}
PAYMENT_AND_REFUND = {"refund_finish", "claim_refund"}


def seed(redis: fakeredis.FakeRedis, payment: Status, refund: RefundStatus | None) -> None:
    """A payment in ``payment`` and a refund of its whole amount in ``refund``, each filed
    where the sweeps and the replay look."""
    fields = new_record_fields(payment_id=PAY, account_id="cus_A", amount_minor=AMOUNT,
                               currency="usd", payment_method="pm_1", idempotency_key="k",
                               fingerprint="f" * 64, client="c")  # fmt: skip
    long_ago = "2026-01-01T00:00:00.000Z"  # a write now always changes updated_at
    fields.update(status=payment.value, payment_intent="pi_1", created_at=long_ago,
                  updated_at=long_ago, expires_ms=str(int(time.time() + DAY) * 1000))  # fmt: skip
    redis.hset(record_key(PAY), mapping=fields)  # type: ignore[arg-type]
    created_ms = int(time.time() * 1000) - 1000
    redis.zadd(client_listed("c"), {PAY: created_ms})
    redis.zadd(client_status("c", payment.value), {PAY: created_ms})
    redis.zadd(DEAD_LETTERS, {PAY: 0})
    redis.zadd(PENDING_INDEX, {PAY: 0})
    if refund is None:
        return
    redis.hset(refund_key(REF), mapping={
        "id": REF, "payment_id": PAY, "status": refund.value, "amount_minor": str(AMOUNT),
        "currency": "usd", "idempotency_key": "r", "fingerprint": "f" * 64,
        "created_at": long_ago,
    })  # fmt: skip
    redis.zadd(REFUNDS_PENDING, {REF: 0})


def snapshot(redis: fakeredis.FakeRedis) -> dict[str, dict[bytes, bytes]]:
    keys = (record_key(PAY), record_key(NEW_PAY), refund_key(REF), refund_key(NEW_REF))
    return {key: redis.hgetall(key) for key in keys}  # type: ignore[misc]


@dataclass(frozen=True)
class Seen:
    step: str
    kind: str  # "payment" or "refund"
    source: str | None  # None: the record did not exist
    target: str
    wrote: bool  # the record's hash changed
    may_list: bool  # a client may now list the customer's charges
    listed_as: frozenset[str]  # the statuses whose client list set holds the payment


def observe() -> Iterator[Seen]:
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeRedis(server=server)
    async_redis = fakeredis.FakeAsyncRedis(server=server)
    settings = Settings(environment="test")
    stores = Stores(redis, PaymentStore(redis, settings), LifecycleStore(redis, settings),
                    RefundStore(redis, settings), AsyncPaymentStore(async_redis, settings),
                    AsyncRefundStore(async_redis, settings),
                    AsyncCancelStore(async_redis, settings), CaptureStore(redis, settings),
                    AsyncCaptureStore(async_redis, settings))  # fmt: skip
    for step, drivers in DRIVERS.items():
        payments = [Status.SUCCEEDED] if step in REFUND_ONLY else list(Status)
        refunds = list(RefundStatus) if step in REFUND_ONLY | PAYMENT_AND_REFUND else [None]
        for run, payment, refund in product(drivers, payments, refunds):
            redis.flushall()
            seed(redis, payment, refund)
            if step in PREPARED:
                redis.hset(record_key(PAY), mapping=PREPARED[step])  # type: ignore[arg-type]
            before = snapshot(redis)
            run(stores)
            after = snapshot(redis)
            for key, now in after.items():
                if not now:
                    continue
                old = before[key]
                yield Seen(
                    step=step,
                    kind="refund" if key.startswith(refund_key("")) else "payment",
                    source=old[b"status"].decode() if old else None,
                    target=now[b"status"].decode(),
                    wrote=old != now,
                    may_list=bool(redis.keys(client_customers("*"))),
                    listed_as=frozenset(
                        status.value
                        for status in Status
                        if redis.zscore(client_status("c", status.value), now[b"id"].decode())
                        is not None
                    ),
                )


@pytest.fixture(scope="module")
def seen() -> list[Seen]:
    return list(observe())


def rows(kind: str) -> set[tuple[str, str, str]]:
    table = PAYMENT_MOVES if kind == "payment" else REFUND_MOVES
    return {(m.step, m.source.value, m.target.value) for m in table}


def test_every_script_that_holds_a_record_is_run_here() -> None:
    scripts = {path.stem for path in LUA_DIR.glob("*.lua")}
    assert scripts == set(DRIVERS) | NO_RECORDS


def test_every_status_change_a_script_makes_is_a_row_of_the_table(seen: list[Seen]) -> None:
    strays = {
        (s.kind, s.step, s.source, s.target)
        for s in seen
        if s.source is not None
        and s.source != s.target
        and (s.step, s.source, s.target) not in rows(s.kind)
    }
    assert strays == set()


def test_a_record_a_script_creates_starts_in_the_initial_status(seen: list[Seen]) -> None:
    created = {(s.kind, s.target) for s in seen if s.source is None}
    assert created == {("payment", PAYMENT_INITIAL.value), ("refund", REFUND_INITIAL.value)}


@pytest.mark.parametrize("kind", ["payment", "refund"])
def test_every_row_of_the_table_is_a_move_its_script_makes(seen: list[Seen], kind: str) -> None:
    made = {(s.step, s.source, s.target) for s in seen if s.kind == kind and s.wrote}
    assert rows(kind) - made == set()


def test_only_a_move_into_succeeded_gives_the_right_to_list_the_customer(
    seen: list[Seen],
) -> None:
    """An accept, a failure or any other step leaves the client without the right to list its
    customer's charges; every step that makes a payment succeed gives it."""
    granted = {(s.step, s.source, s.target) for s in seen if s.kind == "payment" and s.may_list}
    into_succeeded = {
        (m.step, m.source.value, m.target.value)
        for m in PAYMENT_MOVES
        if m.target is Status.SUCCEEDED and m.source is not Status.SUCCEEDED
    }
    assert granted == into_succeeded


def test_a_payment_is_listed_under_its_status_after_every_step(seen: list[Seen]) -> None:
    """The client's list filtered by status (GET /payments?status=) agrees with the record
    after every step of every script, from every status: each move moves its index entry in
    the same script."""
    disagreeing = {
        (s.step, s.source, s.target, tuple(sorted(s.listed_as)))
        for s in seen
        if s.kind == "payment" and s.listed_as != {s.target}
    }
    assert disagreeing == set()
