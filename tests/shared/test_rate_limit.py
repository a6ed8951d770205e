"""The shared Stripe budget: Stripe's limits, the account's and each endpoint's, kept by every
worker together; booked once per attempt, served in booking order, never refused; a 429 cuts
a limit's rate for the whole fleet, which grows back slowly."""

from __future__ import annotations

import time

import fakeredis
import pytest

from shared.settings.service_settings import Settings
from shared.store.keys import STRIPE_BUDGET
from shared.store.stripe_budget_store import (
    CUT_FACTOR,
    INCREASE_PER_SECOND,
    StripeBudgetStore,
    budget_states,
)
from shared.stripe.budget import Slots, StripeBudget
from shared.stripe.outcomes import StripeFailure, TransientStripeError, translate

LIVE = Settings(environment="test", stripe_api_key="sk_live_test_fake").stripe_limits
SANDBOX = Settings(environment="test").stripe_limits
CREATE, RETRIEVE = "POST /v1/payment_intents", "GET /v1/customers/{id}"


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def rate_limited(reason: str | None = "endpoint-rate") -> TransientStripeError:
    error = translate(StripeFailure(kind="rate_limit", http_status=429, code="rate_limit",
                                    rate_limited_reason=reason))  # fmt: skip
    assert isinstance(error, TransientStripeError)
    return error


def times(slots: Slots, endpoint: str, n: int) -> list[float]:
    taken = [slots.take(endpoint) for _ in range(n)]
    return [t for t in taken if t is not None]


def test_stripes_published_defaults_by_the_keys_mode() -> None:
    assert (LIVE.global_rps, LIVE.of(CREATE), LIVE.charge_rate) == (100, 25, 25)
    assert (SANDBOX.global_rps, SANDBOX.of(CREATE), SANDBOX.charge_rate) == (25, 25, 12.5)
    restricted = Settings(environment="test", stripe_api_key="rk_live_test_fake").stripe_limits
    assert restricted.global_rps == 100


def test_overrides_for_an_account_stripe_raised_and_which_global_wins() -> None:
    raised = Settings(
        environment="test",
        stripe_api_key="sk_live_test_fake",
        stripe_max_rps=80,
        stripe_rate_limits='{"global": 250, "POST /v1/payment_intents": 100}',
    )
    assert (raised.stripe_limits.global_rps, raised.stripe_limits.of(CREATE)) == (250, 100)
    assert raised.stripe_limits.of(RETRIEVE) == 25
    by_hand = Settings(environment="test", stripe_max_rps=100).stripe_limits
    assert by_hand.global_rps == 100  # STRIPE_MAX_RPS is the global limit when set
    assert not Settings(environment="test", stripe_max_rps=0).stripe_limits.enabled


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ('{"POST /v1/charges": 10}', "not 'global'"),
        ('{"global": 0}', "positive"),
        ('{"global": "fast"}', "positive"),
        ("[1, 2]", "JSON object"),
        ("{global: 1}", "not JSON"),
    ],
)
def test_a_wrong_limit_is_refused_at_start_saying_why(raw: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Settings(environment="test", stripe_rate_limits=raw)


def test_calls_of_one_endpoint_are_spaced_by_its_limit_across_workers(
    redis: fakeredis.FakeRedis,
) -> None:
    worker_1 = StripeBudget(StripeBudgetStore(redis), LIVE)
    worker_2 = StripeBudget(StripeBudgetStore(redis), LIVE)

    first = worker_1.book(["payment_intents.create", "payment_intents.create"])
    second_at = time.monotonic()
    second = worker_2.book(["payment_intents.create"])

    a, b = times(first, CREATE, 2)
    (c,) = times(second, CREATE, 1)
    assert abs((b - a) - 1 / 25) < 5e-3
    # After both of the first booking's calls (two clocks read a round trip apart: slack),
    # or at once when a loaded machine booked it after that slot had passed.
    assert c - b > 1 / 25 - 3e-2
    assert c - max(b + 1 / 25, second_at) < 0.15  # and not held back past that
    assert first.take(CREATE) is None  # only what was booked


def test_other_endpoints_share_only_the_accounts_limit(redis: fakeredis.FakeRedis) -> None:
    live = StripeBudget(StripeBudgetStore(redis), LIVE)
    started = time.monotonic()
    creates = live.book(["payment_intents.create"] * 10)  # 0.4 s of creates
    reads = live.book(["customers.retrieve"])
    booking = time.monotonic() - started  # a loaded machine may pause between the two
    (first_create,) = times(creates, CREATE, 1)
    (read,) = times(reads, RETRIEVE, 1)
    # Not behind the creates (0.4 s): behind the account's slots they took, 1/100 s each.
    assert read - first_create < 0.15 + booking

    sandbox = StripeBudget(StripeBudgetStore(fakeredis.FakeRedis()), SANDBOX)
    slots = sandbox.book(["customers.retrieve", "payment_intents.create"])
    (r,) = times(slots, RETRIEVE, 1)
    (w,) = times(slots, CREATE, 1)
    assert abs((w - r) - 1 / 25) < 5e-3  # the account's 25/s binds in a sandbox


def test_a_long_backlog_is_a_long_wait_not_a_refusal(redis: fakeredis.FakeRedis) -> None:
    shared = StripeBudgetStore(redis)
    shared.book([CREATE] * 3000, {"global": 100, CREATE: 10})  # five minutes booked ahead
    slots = StripeBudget(shared, Settings(environment="test",
                         stripe_rate_limits=f'{{"{CREATE}": 10}}').stripe_limits).book(
        ["payment_intents.create"]
    )  # fmt: skip
    (first,) = times(slots, CREATE, 1)
    assert 290 < first - time.monotonic() <= 300.5  # five minutes ahead, but booked


def test_a_budget_that_is_off_makes_no_redis_call() -> None:
    budget = StripeBudget(StripeBudgetStore(fakeredis.FakeRedis()), None)
    slots = budget.book(["payment_intents.create"] * 3)
    assert [slots.take(CREATE) is not None for _ in range(4)] == [True, True, True, False]
    off = Settings(environment="test", stripe_max_rps=0).stripe_limits
    assert not StripeBudget(StripeBudgetStore(fakeredis.FakeRedis()), off).enabled


def test_the_api_may_ask_for_a_slot_soon_or_none(redis: fakeredis.FakeRedis) -> None:
    shared = StripeBudgetStore(redis)
    limits = {"global": 100, "GET /v1/charges": 25}
    started = time.monotonic()
    shared.book(["GET /v1/charges"] * 50, limits)  # two seconds booked

    refused = shared.book(["GET /v1/charges"], limits, max_wait=0.5)
    passed = time.monotonic() - started  # a loaded machine may pause between the two
    assert refused.refused
    assert 1.9 - passed < refused.waits[0] <= 2.0
    assert redis.hget(STRIPE_BUDGET, "next|GET /v1/charges") is not None
    again = shared.book(["GET /v1/charges"], limits, max_wait=3.0)  # nothing was booked
    assert not again.refused
    assert abs(again.waits[0] - refused.waits[0]) < 0.05


def test_a_429_cuts_the_endpoints_rate_for_the_whole_fleet_once(
    redis: fakeredis.FakeRedis,
) -> None:
    worker_1 = StripeBudget(StripeBudgetStore(redis), LIVE)
    worker_2 = StripeBudget(StripeBudgetStore(redis), LIVE)

    worker_1.throttled("payment_intents.create", rate_limited())
    worker_2.throttled("payment_intents.create", rate_limited())  # on its way already: no cut

    (state,) = [s for s in states(redis) if s.name == CREATE]
    assert state.rate == pytest.approx(25 * CUT_FACTOR, abs=0.1)
    assert state.rate_limited == 2
    a, b = times(worker_2.book(["payment_intents.create"] * 2), CREATE, 2)
    assert b - a == pytest.approx(1 / (25 * CUT_FACTOR), abs=5e-3)  # every worker slows at once
    assert {s.name: s.rate for s in states(redis)}[RETRIEVE] == 25  # other endpoints untouched


def test_a_429_on_the_accounts_limit_cuts_the_global_rate(redis: fakeredis.FakeRedis) -> None:
    StripeBudget(StripeBudgetStore(redis), LIVE).throttled(
        "customers.retrieve", rate_limited("global-rate")
    )
    rates = {s.name: s.rate for s in states(redis)}
    assert rates["global"] == pytest.approx(100 * CUT_FACTOR, abs=0.1)
    assert rates[RETRIEVE] == 25


def test_the_rate_grows_back_slowly_up_to_the_limit(redis: fakeredis.FakeRedis) -> None:
    budget = StripeBudget(StripeBudgetStore(redis), LIVE)
    budget.throttled("payment_intents.create", rate_limited())
    cut_at = int(redis.hget(STRIPE_BUDGET, f"cut|{CREATE}") or 0)

    redis.hset(STRIPE_BUDGET, f"cut|{CREATE}", cut_at - 4_000_000)  # as if 4 s went by
    (state,) = [s for s in states(redis) if s.name == CREATE]
    assert state.rate == pytest.approx(25 * CUT_FACTOR + 4 * INCREASE_PER_SECOND, abs=0.1)

    redis.hset(STRIPE_BUDGET, f"cut|{CREATE}", cut_at - 60_000_000)  # a minute without a 429
    a, b = times(budget.book(["payment_intents.create"] * 2), CREATE, 2)
    assert b - a == pytest.approx(1 / 25, abs=5e-3)  # back at the limit, never above it
    assert redis.hget(STRIPE_BUDGET, f"rate|{CREATE}") is None


def states(redis: fakeredis.FakeRedis) -> list:  # type: ignore[type-arg]
    from shared.store.keys import STRIPE_BUDGET_COUNTS

    limits = {"global": LIVE.global_rps, **LIVE.endpoints}
    return budget_states(
        redis.hgetall(STRIPE_BUDGET),  # type: ignore[arg-type]
        redis.hgetall(STRIPE_BUDGET_COUNTS),  # type: ignore[arg-type]
        limits,
        time.time(),
    )
