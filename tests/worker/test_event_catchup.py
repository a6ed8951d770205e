"""The catch-up round: Stripe's events whose webhook was never delivered are taken as their
webhook would have been, once each, by one worker of the fleet at a time, remembering how far
it read."""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import fakeredis
import orjson
import pytest

from shared.errors import InvalidRequest
from shared.settings.service_settings import Settings
from shared.store.keys import STRIPE_EVENTS_TURN, WEBHOOK_COUNTS, stripe_event_key
from shared.store.lifecycle_store import LifecycleStore
from shared.store.stripe_budget_store import Booking
from shared.stripe.budget import StripeBudget
from shared.stripe.outcomes import TransientStripeError
from shared.stripe.webhook_events import EventPage, StripeEventRef
from worker import event_catchup
from worker.event_catchup import OVERLAP_SECONDS, EventCatchUp

SETTINGS = Settings(environment="test", stripe_events_catchup_seconds=300)
QUEUE = SETTINGS.queue_name


@dataclass
class Listed:
    ref: StripeEventRef
    created: int


@dataclass
class FakeStripe:
    """Stripe's GET /v1/events over ``events`` (all undelivered), newest first."""

    events: list[Listed] = field(default_factory=list)
    page_size: int = 100
    calls: list[dict[str, object]] = field(default_factory=list)
    fail: Exception | None = None

    def add(self, event_id: str, event_type: str, object_id: str, *, ago: int = 0) -> None:
        ref = StripeEventRef(event_id, event_type, "", object_id, None)
        self.events.append(Listed(ref, int(time.time()) - ago))

    def list_events(
        self,
        *,
        types: list[str],
        created_gte: int,
        created_lte: int,
        starting_after: str | None = None,
        limit: int = 100,
    ) -> EventPage:
        self.calls.append({"gte": created_gte, "lte": created_lte, "after": starting_after})
        if self.fail is not None:
            raise self.fail
        newest = sorted(
            (e for e in reversed(self.events)
             if e.ref.type in types and created_gte <= e.created <= created_lte),
            key=lambda e: -e.created,
        )  # fmt: skip
        ids = [e.ref.id for e in newest]
        start = ids.index(starting_after) + 1 if starting_after else 0
        data = newest[start : start + self.page_size]
        return EventPage(
            events=[e.ref for e in data],
            has_more=start + self.page_size < len(newest),
            last_id=data[-1].ref.id if data else None,
        )


class CountingBooker:
    def __init__(self) -> None:
        self.booked: list[str] = []

    def book(
        self, calls: Sequence[str], limits: Mapping[str, float], *, max_wait: float | None = None
    ) -> Booking:
        self.booked += calls
        return Booking(tuple(0.0 for _ in calls))

    def throttled(self, name: str, limit: float) -> float:
        return limit


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def stripe() -> FakeStripe:
    return FakeStripe()


def catch_up(
    redis: fakeredis.FakeRedis, stripe: FakeStripe, *, budget: StripeBudget | None = None,
    settings: Settings = SETTINGS,
) -> dict[str, int]:  # fmt: skip
    store = LifecycleStore(redis, settings)
    booker = budget or StripeBudget.off()
    return EventCatchUp(store, stripe, settings, booker).run()  # type: ignore[arg-type]


def next_period(redis: fakeredis.FakeRedis) -> None:
    redis.delete(STRIPE_EVENTS_TURN)


def queued(redis: fakeredis.FakeRedis) -> list[tuple[str, list[str]]]:
    """(task, args) of every message in the payments queue, oldest first."""
    out = []
    for raw in reversed(redis.lrange(QUEUE, 0, -1)):
        message = orjson.loads(raw)
        body = orjson.loads(base64.b64decode(message["body"]))
        out.append((message["headers"]["task"], body[0]))
    return out


def test_an_undelivered_event_is_taken_as_its_webhook_would_have_been_once(
    redis: fakeredis.FakeRedis, stripe: FakeStripe
) -> None:
    stripe.add("evt_refund", "charge.refunded", "ch_1", ago=30)
    stripe.add("evt_3ds", "payment_intent.succeeded", "pi_1", ago=20)

    assert catch_up(redis, stripe) == {"pages": 1, "listed": 2, "taken": 2}
    next_period(redis)
    # Read again inside the overlap: taken before, nothing enqueued, nothing counted.
    assert catch_up(redis, stripe) == {"pages": 1, "listed": 2, "taken": 0}

    assert queued(redis) == [
        ("payments.stripe_event", ["evt_3ds", "payment_intent.succeeded", "pi_1", ""]),
        ("payments.stripe_event", ["evt_refund", "charge.refunded", "ch_1", ""]),
    ]
    assert redis.hgetall(WEBHOOK_COUNTS) == {
        b"charge.refunded|caught_up": b"1",
        b"payment_intent.succeeded|caught_up": b"1",
    }


def test_an_event_its_webhook_delivered_is_not_taken_again(
    redis: fakeredis.FakeRedis, stripe: FakeStripe
) -> None:
    redis.set(stripe_event_key("evt_seen"), int(time.time()))  # the webhook's dedupe key
    stripe.add("evt_seen", "charge.refunded", "ch_1", ago=5)

    assert catch_up(redis, stripe)["taken"] == 0
    assert redis.llen(QUEUE) == 0


def test_one_worker_of_the_fleet_reads_in_a_period(
    redis: fakeredis.FakeRedis, stripe: FakeStripe
) -> None:
    stripe.add("evt_1", "charge.refunded", "ch_1")

    first = catch_up(redis, stripe)
    second = catch_up(redis, stripe)  # another worker, the same period

    assert (first["pages"], second["pages"]) == (1, 0)
    assert len(stripe.calls) == 1
    ttl = redis.pttl(STRIPE_EVENTS_TURN)
    assert 290_000 < ttl <= 300_000  # the next round is a period after the last page read


def test_the_round_remembers_how_far_it_read_and_resumes_there(
    redis: fakeredis.FakeRedis, stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_catchup, "PAGES_PER_ROUND", 1)
    stripe.page_size = 2
    for n in range(5):
        stripe.add(f"evt_{n}", "charge.refunded", f"ch_{n}", ago=100 - n)

    taken = []
    for _ in range(3):
        taken.append(catch_up(redis, stripe)["taken"])
        next_period(redis)

    assert taken == [2, 2, 1]
    assert [c["after"] for c in stripe.calls] == [None, "evt_3", "evt_1"]
    assert len({(c["gte"], c["lte"]) for c in stripe.calls}) == 1  # one window, resumed
    window_end = stripe.calls[0]["lte"]
    # The window read, the next one starts a little before its end.
    stripe.add("evt_late", "charge.refunded", "ch_late")
    assert catch_up(redis, stripe)["taken"] == 1
    assert stripe.calls[-1]["gte"] == window_end - OVERLAP_SECONDS  # type: ignore[operator]
    assert redis.llen(QUEUE) == 6


def test_stripe_unreachable_keeps_the_cursor_for_the_next_round(
    redis: fakeredis.FakeRedis, stripe: FakeStripe
) -> None:
    catch_up(redis, stripe)  # a round that read through now
    next_period(redis)
    stripe.add("evt_1", "payment_intent.succeeded", "pi_1", ago=10)
    stripe.fail = TransientStripeError("Stripe unreachable")

    assert catch_up(redis, stripe) == {"pages": 0, "listed": 0, "taken": 0}
    next_period(redis)
    stripe.fail = None
    assert catch_up(redis, stripe)["taken"] == 1
    # Both rounds read from where the first one stopped, whatever the clock did meanwhile.
    first_read_through = stripe.calls[0]["lte"]
    assert isinstance(first_read_through, int)
    assert stripe.calls[1]["gte"] == stripe.calls[2]["gte"] == first_read_through - 60


def test_a_vanished_resume_point_reads_the_window_again(
    redis: fakeredis.FakeRedis, stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_catchup, "PAGES_PER_ROUND", 1)
    stripe.page_size = 1
    stripe.add("evt_old", "charge.refunded", "ch_1", ago=10)
    stripe.add("evt_new", "charge.refunded", "ch_2", ago=5)
    catch_up(redis, stripe)
    next_period(redis)
    stripe.events = [e for e in stripe.events if e.ref.id != "evt_new"]  # Stripe forgot it

    original = stripe.list_events

    def refusing(**params: object) -> EventPage:
        if params.get("starting_after") == "evt_new":
            raise InvalidRequest("No such event: evt_new", code="resource_missing")
        return original(**params)  # type: ignore[arg-type]

    stripe.list_events = refusing  # type: ignore[method-assign]
    assert catch_up(redis, stripe)["taken"] == 1
    assert redis.llen(QUEUE) == 2


def test_each_page_books_a_slot_of_the_fleets_stripe_budget(
    redis: fakeredis.FakeRedis, stripe: FakeStripe
) -> None:
    stripe.page_size = 1
    for n in range(3):
        stripe.add(f"evt_{n}", "charge.refunded", f"ch_{n}", ago=n)
    booker = CountingBooker()

    budget = StripeBudget(booker, SETTINGS.stripe_limits)
    assert catch_up(redis, stripe, budget=budget)["pages"] == 3
    assert booker.booked == ["GET /v1/events"] * 3  # its own endpoint's slots


def test_a_period_of_zero_turns_the_round_off(
    redis: fakeredis.FakeRedis, stripe: FakeStripe
) -> None:
    stripe.add("evt_1", "charge.refunded", "ch_1")
    off = Settings(environment="test", stripe_events_catchup_seconds=0)

    assert catch_up(redis, stripe, settings=off) == {"pages": 0, "listed": 0, "taken": 0}
    assert stripe.calls == []
