"""Stripe's events applied: re-fetched, never trusted for order, moved through the one table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import fakeredis
import pytest

from shared.errors import InvalidRequest
from shared.payments.payment_records import PaymentRecord
from shared.payments.states import PAYMENT_MOVES, Cause, Status
from shared.settings.service_settings import Settings
from shared.store import SKIP, PaymentStore
from shared.store.keys import (
    STRIPE_BUDGET_COUNTS,
    UNKNOWN_INDEX,
    WEBHOOK_COUNTS,
)
from shared.store.lifecycle_store import LifecycleStore
from shared.store.stripe_budget_store import StripeBudgetStore
from shared.stripe.budget import StripeBudget
from shared.stripe.objects import ChargeState
from shared.stripe.outcomes import ChargeOutcome, TransientStripeError
from tests.worker.conftest import SeedPayment
from worker.stripe_events import StripeEventProcessor

PAY = "pay_" + "a" * 24


@dataclass
class FakeGateway:
    """Stripe as it stands now: what a re-fetch answers, whatever the event said."""

    intents: dict[str, ChargeOutcome] = field(default_factory=dict)
    charges: dict[str, ChargeState] = field(default_factory=dict)
    fetches: int = 0
    fail: list[Exception] = field(default_factory=list)

    def retrieve_payment_intent(self, *, payment_intent_id: str) -> ChargeOutcome:
        self.fetches += 1
        if self.fail:
            raise self.fail.pop(0)
        return self.intents[payment_intent_id]

    def retrieve_charge(self, *, charge_id: str) -> ChargeState:
        self.fetches += 1
        return self.charges[charge_id]


@pytest.fixture
def store(redis: fakeredis.FakeRedis) -> LifecycleStore:
    return LifecycleStore(redis, Settings(environment="test"))


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def processor(store: LifecycleStore, gateway: FakeGateway) -> StripeEventProcessor:
    return StripeEventProcessor(store, gateway)  # type: ignore[arg-type]


def record(store: LifecycleStore) -> PaymentRecord:
    found = store.get(PAY)
    assert found is not None
    return found


def intent(status: str, payment_id: str | None = PAY) -> ChargeOutcome:
    return ChargeOutcome(
        status=status,
        payment_intent_id="pi_1",
        charge_id="ch_1" if status == "succeeded" else None,
        next_action="use_stripe_sdk" if status == "requires_action" else None,
        payment_id=payment_id,
        client_secret="pi_1_secret_x" if status == "requires_action" else None,
    )


def test_3ds_completed_moves_requires_action_to_succeeded_and_tells_waiters(
    seed_payment: SeedPayment, redis: fakeredis.FakeRedis, store: LifecycleStore,
    gateway: FakeGateway, processor: StripeEventProcessor,
) -> None:  # fmt: skip
    seed_payment(PAY, Status.REQUIRES_ACTION, next_action="use_stripe_sdk",
                 client_secret="pi_1_secret_x", error='{"code":"authentication_required"}',
                 error_status="402")  # fmt: skip
    gateway.intents["pi_1"] = intent("succeeded")
    pubsub = redis.pubsub()
    pubsub.subscribe("payments:events")
    pubsub.get_message()

    outcome = processor.process("evt_1", "payment_intent.succeeded", "pi_1", "")

    assert outcome == "applied"
    now = record(store)
    assert now.status is Status.SUCCEEDED
    assert (now.charge, now.error, now.next_action, now.client_secret) == ("ch_1", None, None, None)
    assert pubsub.get_message()["data"] == PAY.encode()
    assert redis.hget(WEBHOOK_COUNTS, "payment_intent.succeeded|applied") == b"1"


def test_an_event_is_only_a_hint_the_object_is_fetched_again(
    seed_payment: SeedPayment, redis: fakeredis.FakeRedis, store: LifecycleStore,
    gateway: FakeGateway, processor: StripeEventProcessor,
) -> None:  # fmt: skip
    """requires_action then succeeded, delivered in the other order: Stripe's answer now wins
    each time, so the late requires_action event changes nothing."""
    seed_payment(PAY, Status.REQUIRES_ACTION)
    gateway.intents["pi_1"] = intent("succeeded")

    assert processor.process("evt_2", "payment_intent.succeeded", "pi_1", "") == "applied"
    assert processor.process("evt_1", "payment_intent.requires_action", "pi_1", "") == ("unchanged")
    assert record(store).status is Status.SUCCEEDED
    assert gateway.fetches == 2


def test_each_fetch_books_its_endpoints_slot_of_the_fleets_stripe_budget(
    seed_payment: SeedPayment, redis: fakeredis.FakeRedis, store: LifecycleStore,
    gateway: FakeGateway,
) -> None:  # fmt: skip
    seed_payment(PAY, Status.REQUIRES_ACTION)
    gateway.intents["pi_1"] = intent("succeeded")
    shared = StripeBudgetStore(redis)
    limits = Settings(environment="test").stripe_limits
    budget = StripeBudget(shared, limits)
    processor = StripeEventProcessor(store, gateway, budget=budget)  # type: ignore[arg-type]
    # Charges booked the next 0.3 s of the account's budget (25 calls/s in a sandbox).
    shared.book(
        ["POST /v1/payment_intents"] * 8, {"global": 25.0, "POST /v1/payment_intents": 25.0}
    )

    started = time.monotonic()
    assert processor.process("evt_1", "payment_intent.succeeded", "pi_1", "") == "applied"

    assert time.monotonic() - started >= 0.25  # it waited for the account's next slot
    counts = redis.hgetall(STRIPE_BUDGET_COUNTS)
    assert counts[b"booked|GET /v1/payment_intents/{id}"] == b"1"


def test_the_table_refuses_a_move_backwards(
    seed_payment: SeedPayment, redis: fakeredis.FakeRedis, store: LifecycleStore,
    gateway: FakeGateway, processor: StripeEventProcessor,
) -> None:  # fmt: skip
    seed_payment(PAY, Status.SUCCEEDED)
    gateway.intents["pi_1"] = intent("requires_action")

    assert processor.process("evt_1", "payment_intent.requires_action", "pi_1", "") == "refused"
    assert record(store).status is Status.SUCCEEDED


def test_3ds_abandoned_fails_the_payment(
    seed_payment: SeedPayment, redis: fakeredis.FakeRedis, store: LifecycleStore,
    gateway: FakeGateway, processor: StripeEventProcessor,
) -> None:  # fmt: skip
    seed_payment(PAY, Status.REQUIRES_ACTION, client_secret="pi_1_secret_x")
    gateway.intents["pi_1"] = intent("canceled")

    assert processor.process("evt_1", "payment_intent.canceled", "pi_1", "") == "applied"
    now = record(store)
    assert now.status is Status.FAILED
    assert now.error is not None
    assert now.error["code"] == "payment_intent_canceled"
    assert now.client_secret is None


@pytest.mark.parametrize("authorized", [True, False])
def test_a_canceled_authorization_is_canceled_and_one_never_authorized_failed(
    seed_payment: SeedPayment, store: LifecycleStore, gateway: FakeGateway,
    processor: StripeEventProcessor, authorized: bool,
) -> None:  # fmt: skip
    """Manual capture: released after its authorization, nothing captured (canceled); canceled
    while its customer's 3-D Secure was pending, never authorized (failed, as an automatic one)."""
    before = Status.REQUIRES_CAPTURE if authorized else Status.REQUIRES_ACTION
    seed_payment(PAY, before, capture_method="manual", client_secret="pi_1_secret_x")
    gateway.intents["pi_1"] = replace(
        intent("canceled"), capture_method="manual", charge_id="ch_1" if authorized else None
    )

    assert processor.process("evt_1", "payment_intent.canceled", "pi_1", "") == "applied"
    now = record(store)
    if authorized:
        assert now.status is Status.CANCELED
    else:
        assert now.status is Status.FAILED
        assert now.error is not None
        assert now.error["code"] == "payment_intent_canceled"
        assert now.client_secret is None


def test_an_unknown_outcome_takes_what_stripe_reports_and_leaves_the_reconciler(
    seed_payment: SeedPayment, redis: fakeredis.FakeRedis, store: LifecycleStore,
    gateway: FakeGateway, processor: StripeEventProcessor,
) -> None:  # fmt: skip
    seed_payment(PAY, Status.UNKNOWN)
    redis.zadd(UNKNOWN_INDEX, {PAY: 1})
    gateway.intents["pi_1"] = intent("succeeded")

    assert processor.process("evt_1", "payment_intent.succeeded", "pi_1", "") == "applied"
    assert record(store).status is Status.SUCCEEDED
    assert redis.zscore(UNKNOWN_INDEX, PAY) is None


@pytest.mark.parametrize("status", [Status.QUEUED, Status.PROCESSING])
def test_a_charge_in_flight_is_left_to_the_charge_path(
    seed_payment: SeedPayment, redis: fakeredis.FakeRedis, store: LifecycleStore,
    gateway: FakeGateway, processor: StripeEventProcessor, status: Status,
) -> None:  # fmt: skip
    seed_payment(PAY, status)
    gateway.intents["pi_1"] = intent("succeeded")

    assert processor.process("evt_1", "payment_intent.succeeded", "pi_1", "") == (
        "charge_in_flight"
    )
    assert record(store).status is status


@pytest.mark.parametrize("payment_id", [None, "pay_" + "b" * 24])
def test_objects_that_are_not_ours_are_ignored_and_counted(
    redis: fakeredis.FakeRedis, gateway: FakeGateway, processor: StripeEventProcessor,
    payment_id: str | None,
) -> None:  # fmt: skip
    gateway.intents["pi_1"] = intent("succeeded", payment_id=payment_id)

    assert processor.process("evt_1", "payment_intent.succeeded", "pi_1", "") == "not_ours"
    assert redis.hget(WEBHOOK_COUNTS, "payment_intent.succeeded|not_ours") == b"1"


def test_an_object_stripe_does_not_have_is_unresolved_not_retried(
    gateway: FakeGateway, processor: StripeEventProcessor
) -> None:
    gateway.fail.append(InvalidRequest("No such payment_intent", code="resource_missing"))
    assert processor.process("evt_1", "payment_intent.succeeded", "pi_x", "") == "unresolved"


def test_stripe_unreachable_raises_for_the_task_to_retry(
    gateway: FakeGateway, processor: StripeEventProcessor
) -> None:
    gateway.fail.append(TransientStripeError("connection failed"))
    with pytest.raises(TransientStripeError):
        processor.process("evt_1", "payment_intent.succeeded", "pi_1", "")


def charge(refunded: int, disputed: bool = False) -> ChargeState:
    return ChargeState("ch_1", "pi_1", PAY, 4299, refunded, disputed)


def test_refunds_made_in_stripe_show_and_a_full_one_makes_the_payment_refunded(
    seed_payment: SeedPayment, redis: fakeredis.FakeRedis, store: LifecycleStore,
    gateway: FakeGateway, processor: StripeEventProcessor,
) -> None:  # fmt: skip
    seed_payment(PAY, Status.SUCCEEDED)
    gateway.charges["ch_1"] = charge(1000)
    assert processor.process("evt_1", "charge.refunded", "ch_1", "") == "applied"
    assert (record(store).status, record(store).amount_refunded_minor) == (Status.SUCCEEDED, 1000)

    gateway.charges["ch_1"] = charge(4299)
    assert processor.process("evt_2", "charge.refunded", "ch_1", "") == "applied"
    assert (record(store).status, record(store).amount_refunded_minor) == (Status.REFUNDED, 4299)

    gateway.charges["ch_1"] = charge(1000)  # an older figure never lowers it
    assert processor.process("evt_1", "charge.refunded", "ch_1", "") == "unchanged"
    assert record(store).amount_refunded_minor == 4299


def test_a_dispute_shows_as_disputed(
    seed_payment: SeedPayment, redis: fakeredis.FakeRedis, store: LifecycleStore,
    gateway: FakeGateway, processor: StripeEventProcessor,
) -> None:  # fmt: skip
    seed_payment(PAY, Status.SUCCEEDED)
    gateway.charges["ch_1"] = charge(0, disputed=True)

    assert processor.process("evt_1", "charge.dispute.created", "dp_1", "ch_1") == "applied"
    assert record(store).status is Status.DISPUTED


@pytest.mark.parametrize(
    "status",
    [Status.REQUIRES_ACTION, Status.SUCCEEDED, Status.REFUNDED, Status.DISPUTED, Status.FAILED],
)
def test_the_charge_path_never_attempts_a_payment_past_its_charge(
    seed_payment: SeedPayment, redis: fakeredis.FakeRedis, status: Status
) -> None:
    seed_payment(PAY, status)
    store = PaymentStore(redis, Settings(environment="test"))
    assert store.start_attempt(PAY, token="t") is SKIP


def test_no_move_on_stripe_s_later_word_leads_back_into_the_charge_path() -> None:
    later = {Cause.INTENT, Cause.DISPUTE, Cause.STRIPE_REFUNDS, Cause.OUR_REFUNDS}
    moves = [m for m in PAYMENT_MOVES if m.cause in later]
    assert moves
    assert not {m.target for m in moves} & {Status.QUEUED, Status.PROCESSING}
