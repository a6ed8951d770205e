"""The net under a missed webhook: payments waiting for their customer are re-checked at Stripe
and moved through the same path as a webhook."""

from __future__ import annotations

import time

import fakeredis
import pytest

from shared.errors import InvalidRequest
from shared.payments.states import Status
from shared.settings.service_settings import Settings
from shared.store import PaymentStore
from shared.store.keys import AWAITING_ACTION
from shared.store.lifecycle_store import LifecycleStore
from shared.stripe.outcomes import TransientStripeError
from tests.worker.conftest import SeedPayment
from tests.worker.test_stripe_events import PAY, FakeGateway, intent, record
from worker.action_recheck import next_check, recheck_actions
from worker.stripe_events import StripeEventProcessor

SETTINGS = Settings(environment="test")


@pytest.fixture
def store(redis: fakeredis.FakeRedis) -> LifecycleStore:
    return LifecycleStore(redis, SETTINGS)


def due(redis: fakeredis.FakeRedis) -> None:
    redis.zadd(AWAITING_ACTION, {PAY: time.time() - 1})


def run(store: LifecycleStore, gateway: FakeGateway) -> dict[str, int]:
    processor = StripeEventProcessor(store, gateway)  # type: ignore[arg-type]
    return recheck_actions(store, processor, gateway)  # type: ignore[arg-type]


def test_the_charge_path_files_a_payment_that_waits_for_its_customer(
    seed_payment: SeedPayment,
    redis: fakeredis.FakeRedis,
) -> None:
    seed_payment(PAY, Status.PROCESSING)
    PaymentStore(redis, SETTINGS).finish(PAY, status=Status.REQUIRES_ACTION, fields={})
    assert redis.zscore(AWAITING_ACTION, PAY) is not None


def test_a_completed_authentication_is_found_without_its_webhook(
    seed_payment: SeedPayment, redis: fakeredis.FakeRedis, store: LifecycleStore
) -> None:
    seed_payment(PAY, Status.REQUIRES_ACTION, payment_intent="pi_1")
    due(redis)
    gateway = FakeGateway(intents={"pi_1": intent("succeeded")})

    assert run(store, gateway) == {"moved": 1, "waiting": 0, "dropped": 0}
    assert record(store).status is Status.SUCCEEDED
    assert redis.zscore(AWAITING_ACTION, PAY) is None


def test_still_waiting_is_looked_at_again_later(
    seed_payment: SeedPayment, redis: fakeredis.FakeRedis, store: LifecycleStore
) -> None:
    seed_payment(PAY, Status.REQUIRES_ACTION, payment_intent="pi_1")
    due(redis)
    gateway = FakeGateway(intents={"pi_1": intent("requires_action")})

    assert run(store, gateway)["waiting"] == 1
    score = redis.zscore(AWAITING_ACTION, PAY)
    assert score is not None
    assert score > time.time() + 60


def test_a_payment_moved_by_its_webhook_leaves_without_a_stripe_call(
    seed_payment: SeedPayment, redis: fakeredis.FakeRedis, store: LifecycleStore
) -> None:
    seed_payment(PAY, Status.SUCCEEDED, payment_intent="pi_1")
    due(redis)
    gateway = FakeGateway()

    assert run(store, gateway)["dropped"] == 1
    assert gateway.fetches == 0


def test_stripe_unreachable_stops_the_round_and_keeps_the_check(
    seed_payment: SeedPayment, redis: fakeredis.FakeRedis, store: LifecycleStore
) -> None:
    seed_payment(PAY, Status.REQUIRES_ACTION, payment_intent="pi_1")
    due(redis)
    gateway = FakeGateway(fail=[TransientStripeError("down")])

    assert run(store, gateway) == {"moved": 0, "waiting": 0, "dropped": 0}
    assert redis.zscore(AWAITING_ACTION, PAY) is not None


def test_an_intent_stripe_does_not_have_is_dropped(
    seed_payment: SeedPayment, redis: fakeredis.FakeRedis, store: LifecycleStore
) -> None:
    seed_payment(PAY, Status.REQUIRES_ACTION, payment_intent="pi_1")
    due(redis)
    gateway = FakeGateway(fail=[InvalidRequest("No such payment_intent")])
    assert run(store, gateway)["dropped"] == 1


def test_checks_double_with_the_wait_up_to_six_hours() -> None:
    now = 1_000_000.0
    assert next_check(now, now) == now + 300
    assert next_check(now - 3600, now) == now + 3600
    assert next_check(now - 86400, now) == now + 6 * 3600
