"""The charge logic with Redis faked by fakeredis and Stripe faked at the gateway boundary.

The fake keeps a ledger of charges and replays a saved answer for a repeated idempotency key, as
Stripe does, so "one charge" below means one entry in what the customer would be billed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest

from shared.errors import CardDeclined, CustomerNotFound, CustomerNotOwned, PaymentMethodMissing
from shared.payments.payment_records import PaymentRecord
from shared.settings.service_settings import Settings
from shared.store import PaymentStore
from shared.store.keys import (
    AWAITING_ACTION,
    DEAD_LETTERS,
    EVENTS_CHANNEL,
    UNKNOWN_INDEX,
    lock_key,
    record_key,
)
from shared.store.stripe_budget_store import StripeBudgetStore
from shared.stripe.budget import StripeBudget
from shared.stripe.outcomes import ChargeOutcome, StripeFailure, TransientStripeError, translate
from tests.worker.conftest import seed_record
from worker.attempts import Done, RetryLater
from worker.charge import ChargeProcessor


@dataclass
class FakeStripe:
    default_method: str | None = "pm_default"
    customers: set[str] = field(default_factory=lambda: {"cus_A"})
    fail_next: list[Exception] = field(default_factory=list)
    lose_answer_once: bool = False
    outcome_status: str = "succeeded"
    decline: bool = False
    ledger: list[dict[str, Any]] = field(default_factory=list)
    saved: dict[str, ChargeOutcome] = field(default_factory=dict)
    made: list[ChargeOutcome] = field(default_factory=list)  # as Stripe holds them now
    fail_find: list[Exception] = field(default_factory=list)
    finds: int = 0
    owners: dict[str, str] = field(default_factory=dict)
    customer_reads: int = 0

    def default_payment_method(
        self, *, customer: str, client: str | None = None, required: bool = True
    ) -> str | None:
        """``owners`` stands for the customers' metadata under CUSTOMER_OWNER_METADATA_KEY."""
        self.customer_reads += 1
        if customer not in self.customers:
            raise CustomerNotFound(f"No such customer: {customer}", param="account_id")
        if self.owners.get(customer, client) != client:
            raise CustomerNotOwned(param="account_id")
        if self.default_method is None and required:
            raise PaymentMethodMissing()
        return self.default_method

    def create_payment_intent(self, **params: Any) -> ChargeOutcome:
        if self.fail_next:
            raise self.fail_next.pop(0)
        key = params["idempotency_key"]
        if key in self.saved:
            return self.saved[key]
        if self.decline:
            raise CardDeclined("Your card was declined.", decline_code="insufficient_funds")
        self.ledger.append(params)
        outcome = ChargeOutcome(
            status=self.outcome_status,
            payment_intent_id=f"pi_{len(self.ledger)}",
            charge_id=f"ch_{len(self.ledger)}" if self.outcome_status == "succeeded" else None,
            next_action="use_stripe_sdk" if self.outcome_status == "requires_action" else None,
        )
        self.saved[key] = outcome
        self.made.append(outcome)
        if self.lose_answer_once:
            self.lose_answer_once = False
            raise TransientStripeError("connection reset after the request was sent")
        return outcome

    def retrieve_payment_intent(self, *, payment_intent_id: str) -> ChargeOutcome:
        return ChargeOutcome("succeeded", payment_intent_id, "ch_later")

    def find_payment_intent(
        self, *, customer: str, payment_id: str, created_since: int
    ) -> ChargeOutcome | None:
        """Every PaymentIntent made, charged or not, newest first (Stripe's list by customer)."""
        self.finds += 1
        if self.fail_find:
            raise self.fail_find.pop(0)
        for n in reversed(range(len(self.ledger))):
            params = self.ledger[n]
            if params["payment_id"] == payment_id and params["customer"] == customer:
                return self.made[n]
        return None


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def stripe() -> FakeStripe:
    return FakeStripe()


@pytest.fixture
def settings() -> Settings:
    return Settings(environment="test", charge_max_retries=1, charge_retry_backoff_seconds=0.5)


@pytest.fixture
def store(redis: fakeredis.FakeRedis, settings: Settings) -> PaymentStore:
    return PaymentStore(redis, settings)


@pytest.fixture
def processor(store: PaymentStore, stripe: FakeStripe, settings: Settings) -> ChargeProcessor:
    return ChargeProcessor(store, stripe, settings)  # type: ignore[arg-type]


def load(redis: fakeredis.FakeRedis, payment_id: str) -> PaymentRecord:
    """The record as a client polling the payment would see it."""
    raw = redis.hgetall(record_key(payment_id))
    assert raw, f"no record for {payment_id}"
    return PaymentRecord.from_redis(raw)


def queue_payment(
    redis: fakeredis.FakeRedis, payment_id: str = "pay_1", account_id: str = "cus_A", **kw: Any
) -> str:
    return seed_record(
        redis, payment_id, account_id=account_id, payment_method=kw.get("payment_method")
    )


def test_a_charge_succeeds_and_records_stripe_ids(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor, stripe: FakeStripe
) -> None:
    events = redis.pubsub()
    events.subscribe(EVENTS_CHANNEL)
    payment_id = queue_payment(redis)

    assert processor.process(payment_id) == Done(status="succeeded")  # type: ignore[arg-type]

    record = load(redis, payment_id)
    assert record.status == "succeeded"
    assert record.payment_intent == "pi_1"
    assert record.charge == "ch_1"
    assert record.payment_method == "pm_default"
    (charged,) = stripe.ledger
    assert charged["amount_minor"] == 4299
    assert charged["customer"] == "cus_A"
    assert charged["idempotency_key"] == "pay_1:charge"
    published = [m for m in iter(lambda: events.get_message(timeout=0.1), None)]
    assert any(m["data"] == b"pay_1" for m in published)


def test_the_payments_metadata_and_description_are_on_its_payment_intent_at_every_attempt(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor, stripe: FakeStripe
) -> None:
    payment_id = seed_record(
        redis, "pay_1", description="Order 1001", metadata='{"order_id":"1001","note":"x"}'
    )
    stripe.fail_next = [TransientStripeError("connection reset before the request was sent")]

    assert isinstance(processor.process(payment_id), RetryLater)
    assert processor.process(payment_id) == Done(status="succeeded")  # type: ignore[arg-type]

    (charged,) = stripe.ledger
    assert charged["metadata"] == {"order_id": "1001", "note": "x"}
    assert charged["description"] == "Order 1001"
    assert charged["payment_id"] == payment_id


def test_a_redelivered_message_does_not_charge_twice(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor, stripe: FakeStripe
) -> None:
    payment_id = queue_payment(redis)
    processor.process(payment_id)
    again = processor.process(payment_id)

    assert again == Done(status=None)
    assert len(stripe.ledger) == 1


def test_a_lost_answer_is_retried_with_the_same_key_and_charges_once(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor, stripe: FakeStripe
) -> None:
    stripe.lose_answer_once = True
    payment_id = queue_payment(redis)

    first = processor.process(payment_id)
    assert isinstance(first, RetryLater)
    record = load(redis, payment_id)
    assert record.status == "processing"  # not final: a poll says it is still going

    second = processor.process(payment_id)
    assert second == Done(status="succeeded")  # type: ignore[arg-type]
    assert len(stripe.ledger) == 1


def test_a_payment_awaiting_3ds_whose_answer_was_lost_and_key_forgotten_is_adopted(
    redis: fakeredis.FakeRedis, stripe: FakeStripe, processor: ChargeProcessor
) -> None:
    # Its PaymentIntent made no charge: only a list of PaymentIntents can find it.
    stripe.outcome_status = "requires_action"
    stripe.lose_answer_once = True
    payment_id = queue_payment(redis)
    assert isinstance(processor.process(payment_id), RetryLater)
    stripe.saved.clear()

    processor.process(payment_id)

    record = load(redis, payment_id)
    assert record.status == "requires_action"
    assert record.payment_intent == "pi_1"
    assert record.next_action == "use_stripe_sdk"
    assert len(stripe.ledger) == 1


def test_a_customer_default_changed_between_attempts_does_not_change_the_request(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor, stripe: FakeStripe
) -> None:
    stripe.fail_next = [TransientStripeError("503")]
    payment_id = queue_payment(redis)
    processor.process(payment_id)
    stripe.default_method = "pm_new_default"
    processor.process(payment_id)

    assert stripe.ledger[0]["payment_method"] == "pm_default"


def test_a_decline_fails_the_payment_with_a_402_and_the_decline_code(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor, stripe: FakeStripe
) -> None:
    stripe.decline = True
    payment_id = queue_payment(redis)

    processor.process(payment_id)

    record = load(redis, payment_id)
    assert record.status == "failed"
    assert record.error_status == 402
    assert record.error is not None
    assert record.error["code"] == "card_declined"
    assert record.error["decline_code"] == "insufficient_funds"


def test_an_unknown_customer_fails_with_a_404(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor
) -> None:
    payment_id = queue_payment(redis, account_id="cus_Missing")
    processor.process(payment_id)
    record = load(redis, payment_id)
    assert record.status == "failed"
    assert record.error_status == 404
    assert record.error is not None
    assert record.error["code"] == "customer_not_found"


def test_no_payment_method_fails_with_a_clear_402(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor, stripe: FakeStripe
) -> None:
    stripe.default_method = None
    payment_id = queue_payment(redis)
    processor.process(payment_id)
    record = load(redis, payment_id)
    assert record.error_status == 402
    assert record.error is not None
    assert record.error["code"] == "payment_method_missing"
    assert stripe.ledger == []


def test_authentication_required_leaves_the_payment_requiring_action(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor, stripe: FakeStripe
) -> None:
    stripe.outcome_status = "requires_action"
    payment_id = queue_payment(redis)
    processor.process(payment_id)
    record = load(redis, payment_id)
    assert record.status == "requires_action"
    assert record.payment_intent == "pi_1"
    assert record.error is not None
    assert record.error["code"] == "authentication_required"


def test_stripe_down_past_the_retry_budget_fails_with_a_503_as_a_dead_letter(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor, stripe: FakeStripe
) -> None:
    stripe.fail_next = [TransientStripeError("503"), TransientStripeError("503")]
    payment_id = queue_payment(redis)

    first = processor.process(payment_id)
    assert isinstance(first, RetryLater)
    assert 0 <= first.countdown <= 0.5  # full jitter over backoff x 2^0
    processor.process(payment_id)

    record = load(redis, payment_id)
    assert record.status == "failed"
    assert record.error_status == 503
    assert record.error is not None
    assert record.error["code"] == "stripe_unavailable"
    assert "not charged" in record.error["message"]
    assert stripe.finds == 2  # before the second attempt, and once more before giving up
    assert record.attempts == 2
    assert stripe.ledger == []
    assert redis.zscore(DEAD_LETTERS, payment_id) is not None
    assert redis.get(lock_key(payment_id)) is None


def test_a_payment_leased_by_another_worker_waits_without_using_its_budget(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor, stripe: FakeStripe
) -> None:
    payment_id = queue_payment(redis)
    redis.set(lock_key(payment_id), "other-worker", px=60_000)

    result = processor.process(payment_id)

    assert isinstance(result, RetryLater)
    assert stripe.ledger == []
    record = load(redis, payment_id)
    assert record.attempts == 0
    assert record.status == "queued"


def test_an_unrecorded_earlier_charge_is_adopted_even_after_stripe_forgot_the_key(
    redis: fakeredis.FakeRedis, stripe: FakeStripe, processor: ChargeProcessor
) -> None:
    stripe.lose_answer_once = True
    payment_id = queue_payment(redis)
    assert isinstance(processor.process(payment_id), RetryLater)
    stripe.saved.clear()  # Stripe no longer holds the key, whatever its age

    processor.process(payment_id)

    record = load(redis, payment_id)
    assert record.status == "succeeded"
    assert record.payment_intent == "pi_1"
    assert len(stripe.ledger) == 1


def test_a_rate_limit_asks_for_the_delay_stripe_gave(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor, stripe: FakeStripe
) -> None:
    stripe.fail_next = [TransientStripeError("429", retry_after=3.0)]
    payment_id = queue_payment(redis)
    result = processor.process(payment_id)
    assert result == RetryLater("429", 3.0)


def stripe_429(code: str = "rate_limit", **headers: str) -> TransientStripeError:
    """Stripe's 429 as the gateway translates it (any limiter, or a lock_timeout)."""
    failure = StripeFailure(
        kind="rate_limit",
        http_status=429,
        code=code,
        should_retry=headers.get("should_retry") == "true",
    )
    error = translate(failure)
    assert isinstance(error, TransientStripeError)
    return error


@pytest.mark.parametrize(
    "refusal", [stripe_429(), stripe_429(should_retry="true")], ids=["rate_limit", "should_retry"]
)
def test_a_limiters_429_is_no_attempt_toward_giving_up_and_needs_no_reconciliation(
    redis: fakeredis.FakeRedis,
    processor: ChargeProcessor,
    stripe: FakeStripe,
    settings: Settings,
    refusal: TransientStripeError,
) -> None:
    # More 429s in a row than the retries allowed (CHARGE_MAX_RETRIES=1 here).
    stripe.fail_next = [refusal] * (settings.charge_max_retries + 3)
    payment_id = queue_payment(redis)

    for _ in range(settings.charge_max_retries + 3):
        result = processor.process(payment_id)
        assert isinstance(result, RetryLater)
        assert result.countdown <= settings.charge_retry_backoff_seconds  # soon, not backed off
    assert processor.process(payment_id) == Done(status="succeeded")  # type: ignore[arg-type]

    assert stripe.finds == 0  # Stripe processed none of them: nothing to look up
    assert len(stripe.ledger) == 1
    assert load(redis, payment_id).attempts == 1


@pytest.mark.parametrize(
    "refusal",
    [stripe_429("lock_timeout"), stripe_429("lock_timeout", should_retry="true")],
    ids=["lock_timeout", "should_retry"],
)
def test_a_customer_kept_locked_ends_the_payment_failed_once_stripe_confirms_no_charge(
    redis: fakeredis.FakeRedis,
    processor: ChargeProcessor,
    stripe: FakeStripe,
    settings: Settings,
    refusal: TransientStripeError,
) -> None:
    """A lock_timeout (another request held the customer) is retried with backoff and counted,
    not retried at once forever: past the retries Stripe is asked for the payment, and only
    when it has none is the payment failed as not charged."""
    stripe.fail_next = [refusal] * (settings.charge_max_retries + 5)
    payment_id = queue_payment(redis)

    results = [processor.process(payment_id) for _ in range(settings.charge_max_retries + 1)]

    assert all(isinstance(r, RetryLater) for r in results[:-1])
    assert results[-1] == Done(status="failed")  # type: ignore[arg-type]
    record = load(redis, payment_id)
    assert record.error is not None
    assert "not charged" in record.error["message"].lower()
    assert stripe.finds >= 1  # asked before saying so
    assert stripe.ledger == []


def test_a_lock_timeout_leaves_the_fleets_stripe_budget_alone_and_a_limiters_429_cuts_it(
    redis: fakeredis.FakeRedis, store: PaymentStore, stripe: FakeStripe, settings: Settings
) -> None:
    """One client's locked customer must not slow every client's charges: only a limiter's
    429 cuts the endpoint's rate for the fleet."""
    limits = Settings(environment="test", stripe_max_rps=100).stripe_limits
    budget = StripeBudget(StripeBudgetStore(redis), limits)
    processor = ChargeProcessor(store, stripe, settings, budget)  # type: ignore[arg-type]

    def create_rate() -> float:
        from shared.store.keys import STRIPE_BUDGET

        rate = redis.hget(STRIPE_BUDGET, "rate|POST /v1/payment_intents")
        return float(rate) if rate else limits.endpoints["POST /v1/payment_intents"]

    stripe.fail_next = [stripe_429("lock_timeout")]
    locked = queue_payment(redis)
    assert isinstance(processor.process(locked), RetryLater)
    assert create_rate() == limits.endpoints["POST /v1/payment_intents"]

    stripe.fail_next = [stripe_429()]
    limited = queue_payment(redis, "pay_2")
    assert isinstance(processor.process(limited), RetryLater)
    assert create_rate() < limits.endpoints["POST /v1/payment_intents"]


def test_a_429_after_an_unknown_outcome_still_reconciles_first(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor, stripe: FakeStripe
) -> None:
    stripe.fail_next = [TransientStripeError("connection reset"), stripe_429()]
    payment_id = queue_payment(redis)

    assert isinstance(processor.process(payment_id), RetryLater)  # the write may have landed
    assert isinstance(processor.process(payment_id), RetryLater)  # looked, then a 429
    assert processor.process(payment_id) == Done(status="succeeded")  # type: ignore[arg-type]

    assert stripe.finds == 2  # each attempt after the unknown outcome looked first
    assert len(stripe.ledger) == 1


def test_an_unknown_or_expired_payment_is_skipped(
    processor: ChargeProcessor, stripe: FakeStripe
) -> None:
    assert processor.process("pay_gone") == Done(status=None)
    assert stripe.ledger == []


def test_an_operator_replays_a_dead_letter_and_it_is_charged_once(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor, stripe: FakeStripe, settings: Settings
) -> None:
    store = PaymentStore(redis, settings)
    stripe.fail_next = [TransientStripeError("503"), TransientStripeError("503")]
    payment_id = queue_payment(redis)
    processor.process(payment_id)
    processor.process(payment_id)
    assert [pid for pid, _, _ in store.dead_letters()] == [payment_id]

    assert store.replay(payment_id) is True
    assert store.replay(payment_id) is False  # no longer a dead letter
    assert store.dead_letters() == []
    record = load(redis, payment_id)
    assert record.status == "queued"
    assert record.error is None
    assert record.reconcile_first
    assert redis.llen("payments") == 1

    finds = stripe.finds
    assert processor.process(payment_id) == Done(status="succeeded")  # type: ignore[arg-type]
    assert stripe.finds == finds + 1  # a replay looks for an earlier charge first
    assert len(stripe.ledger) == 1


def test_an_answer_lost_then_stripe_refusing_writes_still_ends_with_the_one_charge(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor, stripe: FakeStripe
) -> None:
    stripe.lose_answer_once = True  # the charge lands, its answer does not
    payment_id = queue_payment(redis)
    assert isinstance(processor.process(payment_id), RetryLater)
    stripe.saved.clear()
    stripe.fail_next = [TransientStripeError("503")] * 5  # every write refused from now on

    assert processor.process(payment_id) == Done(status="succeeded")  # type: ignore[arg-type]
    record = load(redis, payment_id)
    assert record.payment_intent == "pi_1"
    assert len(stripe.ledger) == 1


def test_stripe_unreachable_for_writes_and_reads_is_told_as_unknown_never_not_charged(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor, stripe: FakeStripe
) -> None:
    stripe.fail_next = [TransientStripeError("timeout")] * 2
    stripe.fail_find = [TransientStripeError("503")] * 2
    payment_id = queue_payment(redis)
    assert isinstance(processor.process(payment_id), RetryLater)
    # The second attempt cannot look (its reconcile fails): retry budget spent, look once more.
    assert processor.process(payment_id) == Done(status="unknown")  # type: ignore[arg-type]

    record = load(redis, payment_id)
    assert record.status == "unknown"
    assert record.error is not None
    assert record.error["code"] == "outcome_unknown"
    assert "not charged" not in record.error["message"]
    assert redis.zscore(UNKNOWN_INDEX, payment_id) is not None
    assert redis.zscore(DEAD_LETTERS, payment_id) is None
    assert redis.get(lock_key(payment_id)) is None


def test_the_reconciler_adopts_a_charge_found_later_and_clears_the_error(
    redis: fakeredis.FakeRedis, store: PaymentStore, stripe: FakeStripe, settings: Settings
) -> None:
    processor = ChargeProcessor(store, stripe, settings)  # type: ignore[arg-type]
    stripe.lose_answer_once = True  # charged, answer lost
    payment_id = queue_payment(redis)
    processor.process(payment_id)
    stripe.fail_next = [TransientStripeError("503")]
    stripe.fail_find = [TransientStripeError("503")] * 2
    assert processor.process(payment_id) == Done(status="unknown")  # type: ignore[arg-type]
    redis.zadd(UNKNOWN_INDEX, {payment_id: 0})  # due now

    counts = processor.reconcile_round()

    assert counts["settled"] == 1
    record = load(redis, payment_id)
    assert record.status == "succeeded"
    assert record.payment_intent == "pi_1"
    assert record.error is None
    assert redis.zscore(UNKNOWN_INDEX, payment_id) is None
    assert len(stripe.ledger) == 1


def test_the_reconciler_says_not_charged_only_once_stripe_answers_and_has_nothing(
    redis: fakeredis.FakeRedis, store: PaymentStore, stripe: FakeStripe, settings: Settings
) -> None:
    processor = ChargeProcessor(store, stripe, settings)  # type: ignore[arg-type]
    stripe.fail_next = [TransientStripeError("503")] * 2
    stripe.fail_find = [TransientStripeError("503")] * 3
    payment_id = queue_payment(redis)
    processor.process(payment_id)
    processor.process(payment_id)
    redis.zadd(UNKNOWN_INDEX, {payment_id: 0})

    # Stripe still down: looked again later, with backoff, still unknown.
    assert processor.reconcile_round()["postponed"] == 1
    assert load(redis, payment_id).status == "unknown"
    assert load(redis, payment_id).reconcile_attempts == 1
    next_check = redis.zscore(UNKNOWN_INDEX, payment_id)
    assert next_check is not None
    assert next_check > time.time()

    redis.zadd(UNKNOWN_INDEX, {payment_id: 0})
    processor.reconcile_round()
    record = load(redis, payment_id)
    assert record.status == "failed"
    assert record.error is not None
    assert "not charged" in record.error["message"]
    assert redis.zscore(DEAD_LETTERS, payment_id) is not None
    assert stripe.ledger == []


def test_the_reconciler_tells_a_customer_who_must_act_how_even_when_stripe_names_no_action(
    redis: fakeredis.FakeRedis,
    store: PaymentStore,
    stripe: FakeStripe,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Stripe's PaymentIntent needs 3-D Secure but names no next action (Stripe.js handles it).
    found = ChargeOutcome("requires_action", "pi_9", None, client_secret="pi_9_secret_x")
    monkeypatch.setattr(stripe, "find_payment_intent", lambda **_: found)
    payment_id = queue_payment(redis)
    redis.hset(record_key(payment_id), "status", "unknown")
    redis.zadd(UNKNOWN_INDEX, {payment_id: 0})

    processor = ChargeProcessor(store, stripe, settings)  # type: ignore[arg-type]
    counts = processor.reconcile_round()

    assert counts["settled"] == 1
    record = load(redis, payment_id)
    assert record.status == "requires_action"
    assert record.next_action == "use_stripe_sdk"
    assert record.client_secret == "pi_9_secret_x"
    assert record.error is not None
    assert record.error["code"] == "authentication_required"
    assert (
        redis.zscore(AWAITING_ACTION, payment_id) is not None
    )  # re-checked should no webhook come


def test_a_budget_wait_books_once_and_never_fails_the_payment(
    redis: fakeredis.FakeRedis, store: PaymentStore, stripe: FakeStripe, settings: Settings
) -> None:
    shared = StripeBudgetStore(redis)
    limits = Settings(environment="test", stripe_max_rps=20).stripe_limits
    budget = StripeBudget(shared, limits)
    processor = ChargeProcessor(store, stripe, settings, budget)  # type: ignore[arg-type]
    # Other workers booked the next 0.6 s of the budget.
    shared.book(["GET /v1/events"] * 12, {"global": 20, "GET /v1/events": 25})
    payment_id = queue_payment(redis)

    started = time.monotonic()
    assert processor.process(payment_id) == Done(status="succeeded")  # type: ignore[arg-type]

    assert time.monotonic() - started >= 0.5  # it waited its turn...
    assert load(redis, payment_id).attempts == 1  # ...as one attempt, not a failure


def test_the_same_delivery_starting_again_after_a_redis_blip_keeps_its_lease(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor, stripe: FakeStripe
) -> None:
    payment_id = queue_payment(redis)
    redis.set(lock_key(payment_id), "tag-1", px=60_000)  # taken by this delivery before the blip

    assert processor.process(payment_id, delivery_tag="tag-2") == RetryLater(
        "another worker holds this payment", 5.0
    )
    assert processor.process(payment_id, delivery_tag="tag-1") == Done(status="succeeded")  # type: ignore[arg-type]
    assert len(stripe.ledger) == 1


@pytest.mark.parametrize("payment_method", [None, "pm_given"])
def test_another_client_s_customer_is_refused_before_any_charge(
    redis: fakeredis.FakeRedis, stripe: FakeStripe, payment_method: str | None
) -> None:
    settings = Settings(environment="test", customer_owner_metadata_key="owner")
    processor = ChargeProcessor(PaymentStore(redis, settings), stripe, settings)  # type: ignore[arg-type]
    stripe.owners["cus_A"] = "shop"
    theirs = seed_record(redis, "pay_1", payment_method=payment_method, client="other")
    ours = seed_record(redis, "pay_2", payment_method=payment_method, client="shop")

    assert processor.process(theirs) == Done(status="failed")  # type: ignore[arg-type]
    assert processor.process(ours) == Done(status="succeeded")  # type: ignore[arg-type]

    refused = load(redis, theirs)
    assert refused.error_status == 403
    assert refused.error is not None
    assert refused.error["code"] == "customer_not_owned"
    assert "not charged" in refused.error["message"]
    assert [charge["payment_id"] for charge in stripe.ledger] == [ours]
    assert stripe.ledger[0]["client"] == "shop"
    assert stripe.customer_reads == 2  # the customer is read even when the method is given


def test_without_owners_a_given_payment_method_costs_no_customer_read(
    redis: fakeredis.FakeRedis, processor: ChargeProcessor, stripe: FakeStripe
) -> None:
    stripe.owners["cus_A"] = "shop"  # metadata that means nothing while the key is unset
    payment_id = seed_record(redis, "pay_1", payment_method="pm_given", client="other")
    assert processor.process(payment_id) == Done(status="succeeded")  # type: ignore[arg-type]
    assert stripe.customer_reads == 0
