"""The shared Stripe budget: booked once per attempt, served in booking order, never refused."""

from __future__ import annotations

import time

import fakeredis

from shared.settings.service_settings import Settings
from shared.store import PaymentStore
from shared.stripe.budget import StripeBudget


def store() -> PaymentStore:
    return PaymentStore(fakeredis.FakeRedis(), Settings(environment="test"))


def test_bookings_from_two_workers_are_spaced_one_interval_apart() -> None:
    shared = store()
    worker_1 = StripeBudget(shared, rate_per_second=10)
    worker_2 = StripeBudget(shared, rate_per_second=10)

    first = worker_1.book(2)
    second = worker_2.book(1)

    a, b = first.take(), first.take()
    c = second.take()
    assert a is not None
    assert b is not None
    assert c is not None
    assert abs((b - a) - 0.1) < 1e-6
    assert 0.15 < c - a < 0.25  # after both of the first booking's calls
    assert first.take() is None  # only what was booked


def test_a_long_backlog_is_a_long_wait_not_a_refusal() -> None:
    shared = store()
    shared.reserve_stripe_slots(count=3000, interval_us=100_000)  # five minutes booked ahead
    slots = StripeBudget(shared, rate_per_second=10).book(2)
    first = slots.take()
    assert first is not None
    assert first == slots.first_at
    assert 290 < first - time.monotonic() <= 300  # five minutes ahead, but booked


def test_a_rate_of_zero_means_no_limit_and_no_redis_call() -> None:
    budget = StripeBudget(store(), rate_per_second=0)
    slots = budget.book(3)
    assert [slots.take() is not None for _ in range(4)] == [True, True, True, False]
