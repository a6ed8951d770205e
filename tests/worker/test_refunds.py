"""Refunds with Redis faked by fakeredis and Stripe faked at the gateway boundary: the amount
arithmetic and its races, exactly one Stripe refund per request, "not refunded" only when
Stripe confirms it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest

from shared.celery_message import task_message
from shared.errors import InvalidRequest, UpstreamError
from shared.payments.payment_records import CHARGE_TASK, PaymentRecord
from shared.payments.refund_records import refund_fingerprint
from shared.payments.states import RefundStatus, Status
from shared.settings.service_settings import Settings
from shared.store import PaymentStore
from shared.store.keys import REFUNDS_UNKNOWN, record_key, refund_key
from shared.store.lifecycle_store import LifecycleStore
from shared.store.refund_store import AsyncRefundStore, RefundClaim, RefundStore
from shared.stripe.outcomes import RefundOutcome, TransientStripeError
from tests.worker.conftest import SeedPayment
from worker.attempts import Done, RetryLater
from worker.refund_attempts import RefundProcessor

PAY = "pay_" + "c" * 24
SETTINGS = Settings(environment="test", charge_max_retries=2)


@dataclass
class FakeStripe:
    """Stripe's refunds: a ledger, a saved answer per idempotency key, refunds findable by
    our metadata."""

    ledger: list[dict[str, Any]] = field(default_factory=list)
    saved: dict[str, RefundOutcome] = field(default_factory=dict)
    fail_create: list[Exception] = field(default_factory=list)
    fail_find: list[Exception] = field(default_factory=list)
    lose_answer_once: bool = False
    status: str = "succeeded"

    def create_refund(self, **params: Any) -> RefundOutcome:
        if self.fail_create:
            raise self.fail_create.pop(0)
        key = params["idempotency_key"]
        if key not in self.saved:
            self.ledger.append(params)
            self.saved[key] = RefundOutcome(
                f"re_{len(self.ledger)}", self.status, params["amount_minor"], params["refund_id"]
            )
        if self.lose_answer_once:
            self.lose_answer_once = False
            raise TransientStripeError("connection reset after the request was sent")
        return self.saved[key]

    def find_refund(self, *, charge_id: str, refund_id: str) -> RefundOutcome | None:
        if self.fail_find:
            raise self.fail_find.pop(0)
        return next((r for r in self.saved.values() if r.refund_id == refund_id), None)

    def retrieve_refund(self, *, stripe_refund_id: str) -> RefundOutcome:
        found = next(r for r in self.saved.values() if r.id == stripe_refund_id)
        return RefundOutcome(found.id, "succeeded", found.amount_minor, found.refund_id)


@pytest.fixture
def api_store(server: fakeredis.FakeServer) -> AsyncRefundStore:
    return AsyncRefundStore(fakeredis.FakeAsyncRedis(server=server), SETTINGS)


@pytest.fixture
def stripe() -> FakeStripe:
    return FakeStripe()


@pytest.fixture
def processor(redis: fakeredis.FakeRedis, stripe: FakeStripe) -> RefundProcessor:
    return RefundProcessor(
        RefundStore(redis, SETTINGS),
        LifecycleStore(redis, SETTINGS),
        stripe,  # type: ignore[arg-type]
        SETTINGS,
    )


Paid = Callable[..., None]


@pytest.fixture
def paid(seed_payment: SeedPayment) -> Paid:
    """The payment charged 42.99 (or in ``status``), ready to refund."""

    def charged(status: Status = Status.SUCCEEDED) -> None:
        seed_payment(PAY, status, charge="ch_1", payment_intent="pi_1")

    return charged


def payment(redis: fakeredis.FakeRedis) -> PaymentRecord:
    return PaymentRecord.from_redis(redis.hgetall(record_key(PAY)))


async def claim(store: AsyncRefundStore, key: str, amount: int | None) -> RefundClaim:
    refund_id = "ref_" + key.rjust(24, "0")
    fields = {
        "id": refund_id, "payment_id": PAY, "status": "pending", "currency": "usd",
        "idempotency_key": key, "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:00.000Z", "attempts": "0",
        "fingerprint": refund_fingerprint(payment_id=PAY, amount_minor=amount),
    }  # fmt: skip
    return await store.claim(
        refund_id=refund_id, payment_id=PAY, amount_minor=amount, fields=fields, message=b"{}"
    )


async def test_partial_refunds_then_the_rest_then_nothing_is_left(
    paid: Paid, redis: fakeredis.FakeRedis, api_store: AsyncRefundStore
) -> None:
    paid()
    first = await claim(api_store, "a", 1000)
    second = await claim(api_store, "b", 2000)
    rest = await claim(api_store, "c", None)
    more = await claim(api_store, "d", 1)

    assert first.created
    assert second.created
    assert rest.created
    assert rest.record is not None
    assert rest.record.amount_minor == 1299
    assert more.left_minor == 0
    assert payment(redis).refund_reserved_minor == 4299
    assert redis.llen("payments") == 3


async def test_a_refund_over_what_is_left_is_refused_with_what_is_left(
    paid: Paid, redis: fakeredis.FakeRedis, api_store: AsyncRefundStore
) -> None:
    paid()
    await claim(api_store, "a", 4000)
    over = await claim(api_store, "b", 300)
    assert over.left_minor == 299
    assert not over.created


async def test_concurrent_refunds_never_exceed_the_charge(
    paid: Paid, redis: fakeredis.FakeRedis, api_store: AsyncRefundStore
) -> None:
    paid()
    claims = await asyncio.gather(*(claim(api_store, f"k{n}", 1000) for n in range(10)))
    assert sum(c.created for c in claims) == 4
    assert payment(redis).refund_reserved_minor == 4000


@pytest.mark.parametrize(
    "status",
    [Status.QUEUED, Status.PROCESSING, Status.FAILED, Status.REQUIRES_ACTION, Status.UNKNOWN,
     Status.REFUNDED, Status.DISPUTED],
)  # fmt: skip
async def test_only_a_succeeded_payment_is_refundable(
    paid: Paid, redis: fakeredis.FakeRedis, api_store: AsyncRefundStore, status: Status
) -> None:
    paid(status)
    refused = await claim(api_store, "a", 100)
    assert refused.not_refundable == status.value
    assert redis.llen("payments") == 0


async def test_the_same_key_finds_the_same_refund_and_claims_nothing_more(
    paid: Paid, redis: fakeredis.FakeRedis, api_store: AsyncRefundStore
) -> None:
    paid()
    first = await claim(api_store, "a", 1000)
    again = await claim(api_store, "a", 1000)
    assert first.created
    assert not again.created
    assert again.record is not None
    assert first.record is not None
    assert again.record.id == first.record.id
    assert payment(redis).refund_reserved_minor == 1000


async def test_a_dashboard_refund_counts_against_what_is_left(
    paid: Paid, redis: fakeredis.FakeRedis, api_store: AsyncRefundStore
) -> None:
    paid()
    redis.hset(record_key(PAY), "stripe_refunded_minor", 4000)
    assert (await claim(api_store, "a", 500)).left_minor == 299


async def accepted(redis: fakeredis.FakeRedis, api_store: AsyncRefundStore, key: str,
                   amount: int | None) -> str:  # fmt: skip
    claimed = await claim(api_store, key, amount)
    assert claimed.record is not None
    return claimed.record.id


async def test_a_refund_is_made_once_and_a_full_one_refunds_the_payment(paid: Paid,
    redis: fakeredis.FakeRedis, api_store: AsyncRefundStore, processor: RefundProcessor,
    stripe: FakeStripe,
) -> None:  # fmt: skip
    paid()
    partial = await accepted(redis, api_store, "a", 1000)
    rest = await accepted(redis, api_store, "b", None)

    assert processor.process(partial) == Done(RefundStatus.SUCCEEDED)
    assert payment(redis).status is Status.SUCCEEDED
    assert processor.process(rest) == Done(RefundStatus.SUCCEEDED)
    assert processor.process(rest) == Done(None)  # a redelivery: already final

    now = payment(redis)
    assert now.status is Status.REFUNDED
    assert (now.refunded_minor, now.refund_reserved_minor) == (4299, 0)
    assert [p["amount_minor"] for p in stripe.ledger] == [1000, 3299]
    assert {p["idempotency_key"] for p in stripe.ledger} == {f"{partial}:refund", f"{rest}:refund"}


async def test_a_lost_answer_is_reconciled_not_refunded_twice(paid: Paid,
    redis: fakeredis.FakeRedis, api_store: AsyncRefundStore, processor: RefundProcessor,
    stripe: FakeStripe,
) -> None:  # fmt: skip
    paid()
    refund_id = await accepted(redis, api_store, "a", 1000)
    stripe.lose_answer_once = True  # Stripe refunded, the answer never came back

    assert isinstance(processor.process(refund_id), RetryLater)
    # Stripe's key memory is gone (24 h later, say): only finding ours prevents a second one.
    stripe.saved = {"forgotten": next(iter(stripe.saved.values()))}
    assert processor.process(refund_id) == Done(RefundStatus.SUCCEEDED)
    assert len(stripe.ledger) == 1


async def test_retries_run_out_and_stripe_has_nothing_so_the_hold_is_given_back(paid: Paid,
    redis: fakeredis.FakeRedis, api_store: AsyncRefundStore, processor: RefundProcessor,
    stripe: FakeStripe,
) -> None:  # fmt: skip
    paid()
    refund_id = await accepted(redis, api_store, "a", 1000)
    stripe.fail_create = [TransientStripeError("503")] * 5

    results = [processor.process(refund_id) for _ in range(3)]

    assert all(isinstance(r, RetryLater) for r in results[:2])
    assert results[2] == Done(RefundStatus.FAILED)
    assert stripe.ledger == []
    assert payment(redis).refund_reserved_minor == 0
    refund = RefundStore(redis, SETTINGS).get(refund_id)
    assert refund is not None
    assert refund.error is not None
    assert "nothing was refunded" in refund.error["message"]


async def test_stripe_unreachable_at_the_end_is_unknown_until_the_round_finds_it(paid: Paid,
    redis: fakeredis.FakeRedis, api_store: AsyncRefundStore, processor: RefundProcessor,
    stripe: FakeStripe,
) -> None:  # fmt: skip
    paid()
    refund_id = await accepted(redis, api_store, "a", 1000)
    stripe.lose_answer_once = True
    stripe.fail_create = [TransientStripeError("503")]
    stripe.fail_find = [TransientStripeError("down")] * 3
    processor.process(refund_id)  # 503
    processor.process(refund_id)  # reconcile fails: retry
    assert processor.process(refund_id) == Done(RefundStatus.UNKNOWN)
    assert payment(redis).refund_reserved_minor == 1000  # still held: not "not refunded"

    stripe.fail_find = []
    stripe.saved["k"] = RefundOutcome("re_9", "succeeded", 1000, refund_id)
    redis.zadd(REFUNDS_UNKNOWN, {refund_id: time.time() - 1})
    counts = processor.reconcile_round()
    assert counts["settled"] == 1
    assert redis.hget(refund_key(refund_id), "status") == b"succeeded"
    assert payment(redis).refunded_minor == 1000
    assert redis.zscore(REFUNDS_UNKNOWN, refund_id) is None


async def test_an_unknown_refund_is_looked_at_again_soon_then_less_often(paid: Paid,
    redis: fakeredis.FakeRedis, api_store: AsyncRefundStore, processor: RefundProcessor,
    stripe: FakeStripe,
) -> None:  # fmt: skip
    paid()
    refund_id = await accepted(redis, api_store, "a", 1000)
    stripe.fail_create = [TransientStripeError("503")] * 3
    stripe.fail_find = [TransientStripeError("down")] * 10
    for _ in range(3):
        processor.process(refund_id)
    assert redis.hget(refund_key(refund_id), "status") == b"unknown"
    base = SETTINGS.reconcile_backoff_seconds
    waits = []
    for _ in range(3):
        redis.zadd(REFUNDS_UNKNOWN, {refund_id: time.time() - 1})
        assert processor.reconcile_round()["postponed"] == 1
        score = redis.zscore(REFUNDS_UNKNOWN, refund_id)
        assert score is not None
        waits.append(score - time.time())

    # Doubling from RECONCILE_BACKOFF_SECONDS, however many attempts the refund took before.
    assert [round(w / base) for w in waits] == [1, 2, 4]
    assert redis.hget(refund_key(refund_id), "attempts") == b"3"  # looking is no attempt
    assert payment(redis).refund_reserved_minor == 1000  # still held while unknown


async def test_a_key_stripe_says_was_used_otherwise_is_reconciled_not_failed(paid: Paid,
    redis: fakeredis.FakeRedis, api_store: AsyncRefundStore, processor: RefundProcessor,
    stripe: FakeStripe,
) -> None:  # fmt: skip
    paid()
    refund_id = await accepted(redis, api_store, "a", 1000)
    # An earlier request with this key made the refund; Stripe now refuses the key.
    stripe.saved["earlier"] = RefundOutcome("re_9", "succeeded", 1000, refund_id)
    stripe.fail_create = [
        UpstreamError("Stripe refused a reused idempotency key.", code="idempotency_error")
    ]

    assert processor.process(refund_id) == Done(RefundStatus.SUCCEEDED)
    assert redis.hget(refund_key(refund_id), "stripe_refund") == b"re_9"
    assert payment(redis).refunded_minor == 1000


async def test_stripe_refusing_the_refund_fails_it_and_gives_the_hold_back(paid: Paid,
    redis: fakeredis.FakeRedis, api_store: AsyncRefundStore, processor: RefundProcessor,
    stripe: FakeStripe,
) -> None:  # fmt: skip
    paid()
    refund_id = await accepted(redis, api_store, "a", 1000)
    stripe.fail_create = [InvalidRequest("Charge ch_1 has already been refunded.")]
    assert processor.process(refund_id) == Done(RefundStatus.FAILED)
    assert payment(redis).refund_reserved_minor == 0
    assert (await claim(api_store, "b", 4299)).created  # all of it is refundable again


def another_charge_queued(redis: fakeredis.FakeRedis, enqueued_ms: int) -> None:
    """The payments queue holds one message: another payment's charge, stamped ``enqueued_ms``
    by the clock of the process that enqueued it."""
    redis.delete("payments")
    redis.lpush("payments", task_message(
        task_name=CHARGE_TASK, task_id="pay_other", args=("pay_other",), queue="payments",
        headers={"enqueued_at": enqueued_ms},
    ))  # fmt: skip


async def test_a_lost_refund_message_is_pushed_again_by_the_sweep_and_only_then(
    paid: Paid, redis: fakeredis.FakeRedis, api_store: AsyncRefundStore, processor: RefundProcessor
) -> None:
    paid()
    refund_id = await accepted(redis, api_store, "a", 1000)
    pushed_ms = int(time.time() * 1000) - 60_000
    redis.hset(refund_key(refund_id), "enqueued_at", pushed_ms)  # as the API stamps it
    redis.delete("payments")  # lost between the transport's pop and its unacked entry
    store = RefundStore(redis, SETTINGS)
    step = 2 * SETTINGS.sweep_stale_seconds  # each look puts the next one a sweep away
    at = iter(time.time() + step * n for n in range(1, 9))

    def sweep(reserved: frozenset[str] = frozenset()) -> list[str]:
        """One maintenance round: the queue's oldest message read first, as the round does."""
        oldest = PaymentStore(redis, SETTINGS).queue_oldest_ms()
        return store.requeue_stale(queue_oldest_ms=oldest, reserved=set(reserved), now=next(at))

    redis.set(f"payments:lock:{refund_id}", "someone")  # a worker holds it: not lost
    assert sweep() == []
    redis.delete(f"payments:lock:{refund_id}")
    assert sweep(frozenset({refund_id})) == []  # among the messages workers reserved
    # The queue has not moved past it: a message enqueued before it still waits.
    another_charge_queued(redis, pushed_ms - 1_000)
    assert sweep() == []
    # Enqueued after it by less than the clock skew allowed (5 s): it cannot tell.
    another_charge_queued(redis, pushed_ms + 4_000)
    assert sweep() == []
    # The queue has moved past it: lost, pushed again once.
    another_charge_queued(redis, pushed_ms + 6_000)
    assert sweep() == [refund_id]
    assert redis.llen("payments") == 2
    assert sweep() == []  # its new message is the newest: waiting, not lost

    assert processor.process(refund_id) == Done(RefundStatus.SUCCEEDED)
    redis.delete("payments")
    assert sweep() == []
    assert redis.zcard("payments:refunds_pending") == 0
