"""The order workers take queues in: clients in turns by weight, the service's own queues
first, and no message taken while the Stripe budget is booked past the lookahead."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence

import pytest

from shared.settings.service_settings import Settings
from shared.store.stripe_budget_store import Booking
from shared.stripe.budget import StripeBudget
from worker import fair_queues
from worker.fair_queues import WeightedTurns, transport_options


class Broker:
    """Redis's BRPOP over a worker's queues: the first in the cycle's order that holds one."""

    def __init__(self, turns: WeightedTurns, **queued: int) -> None:
        self.turns = turns
        self.queues = {f"payments.{name}": deque(range(n)) for name, n in queued.items()}
        turns.update([*self.queues, "payments", "callbacks"])

    def push(self, queue: str, count: int = 1) -> None:
        self.queues.setdefault(queue, deque()).extend(range(count))

    def pop(self) -> str | None:
        for queue in self.turns.consume(len(self.turns.items)):
            if self.queues.get(queue):
                self.queues[queue].popleft()
                self.turns.rotate(queue)
                return queue
        return None

    def take(self, count: int) -> Counter[str | None]:
        return Counter(self.pop() for _ in range(count))


def turns(**weights: float) -> WeightedTurns:
    return WeightedTurns("payments.", {f"payments.{c}": w for c, w in weights.items()})


def test_two_clients_with_work_take_turns() -> None:
    broker = Broker(turns(), greedy=1_000, other=1_000)
    assert [broker.pop() for _ in range(4)] in (
        ["payments.greedy", "payments.other"] * 2,
        ["payments.other", "payments.greedy"] * 2,
    )


def test_turns_follow_the_weights() -> None:
    broker = Broker(turns(heavy=3), greedy=1_000, heavy=1_000)
    taken = broker.take(400)
    assert taken["payments.heavy"] == 300
    assert taken["payments.greedy"] == 100


def test_a_calm_clients_payment_is_next_behind_any_backlog() -> None:
    broker = Broker(turns(), greedy=3_000, calm=0)
    broker.take(500)
    broker.push("payments.calm")
    assert broker.pop() == "payments.calm"


def test_a_client_saves_no_credit_while_it_has_nothing_queued() -> None:
    broker = Broker(turns(), greedy=3_000, calm=0)
    broker.take(1_000)
    broker.push("payments.calm", 100)
    taken = broker.take(20)
    assert taken == Counter({"payments.calm": 10, "payments.greedy": 10})


def test_a_client_queue_found_later_starts_level_with_the_others() -> None:
    broker = Broker(turns(), greedy=3_000)
    broker.take(1_000)
    broker.push("payments.new", 100)
    broker.turns.update([*broker.turns.items, "payments.new"])
    taken = broker.take(20)
    assert taken == Counter({"payments.new": 10, "payments.greedy": 10})


def test_the_services_own_queues_come_before_the_clients_turns() -> None:
    broker = Broker(turns(), greedy=100)
    broker.push("callbacks", 3)
    broker.push("payments", 2)
    assert sorted(broker.pop() for _ in range(5)) == ["callbacks"] * 3 + ["payments"] * 2  # type: ignore[type-var]
    assert broker.pop() == "payments.greedy"


def test_configured_weights_reach_the_transport() -> None:
    clients = '[{"name": "heavy", "keys": ["k1"], "weight": 3}, {"name": "plain", "keys": ["k2"]}]'
    options = transport_options(Settings(environment="test", api_clients=clients))
    assert options == {"client_prefix": "payments.", "weights": {"payments.heavy": 3.0}}


class Booker:
    def __init__(self, wait: float) -> None:
        self.wait = wait

    def book(
        self, calls: Sequence[str], limits: Mapping[str, float], *, max_wait: float | None = None
    ) -> Booking:
        return Booking(tuple(self.wait for _ in calls))

    def throttled(self, name: str, limit: float) -> float:
        return limit


CAP_10 = Settings(environment="test", stripe_max_rps=10).stripe_limits


@pytest.fixture
def paced() -> object:
    yield
    fair_queues._paced.clear()


@pytest.mark.usefixtures("paced")
def test_no_message_is_taken_while_the_budget_is_booked_past_the_lookahead() -> None:
    booker = Booker(wait=0.0)
    budget = StripeBudget(booker, CAP_10)
    fair_queues.pace_by(budget, lookahead_seconds=2.0)
    assert fair_queues.may_take()

    booker.wait = 5.0  # other workers booked the next 5 s
    budget.book(["customers.retrieve", "payment_intents.create"])
    assert not fair_queues.may_take()
    assert 4.9 < budget.booked_ahead() <= 5.2

    booker.wait = 1.0
    budget._booked_until = time.monotonic()  # those slots went by
    budget.book(["customers.retrieve", "payment_intents.create"])
    assert fair_queues.may_take()


@pytest.mark.usefixtures("paced")
def test_without_a_stripe_cap_nothing_is_paced() -> None:
    fair_queues.pace_by(StripeBudget(Booker(wait=60.0), None), 2.0)
    assert fair_queues.may_take()
