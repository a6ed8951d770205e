"""Reads cannot starve accepts: at most LIST_MAX_CONCURRENCY Stripe list calls at once per API
process; one more is answered 503 ``list_busy`` with Retry-After at once, and the slots free up
when the calls end (also when they fail). Nor can one client's lists keep another's out: a
client holds at most its share of the slots. Stripe is faked at the gateway boundary, slow."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import fakeredis
import httpx
import pytest

from api.list_limit import ListBusy, ListLimiter, client_cap
from shared.errors import StripeUnavailable
from shared.settings.api_clients import Client
from shared.settings.service_settings import Settings
from shared.store.stripe_budget_store import AsyncStripeBudgetStore
from shared.stripe.objects import ChargePage, ChargeSummary

ClientFor = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


class SlowStripeGateway:
    """Each list call waits until released, as a slow Stripe would make it wait."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0
        self.error: Exception | None = None

    async def list_charges(
        self, *, customer: str, limit: int, starting_after: str | None
    ) -> ChargePage:
        self.started += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        charge = ChargeSummary(
            id="ch_1",
            amount="42.99",
            currency="usd",
            status="succeeded",
            created=1,
            payment_intent="pi_1",
            description=None,
            payment_id=None,
            failure_code=None,
            refunded=False,
        )
        return ChargePage(data=[charge], has_more=False)


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.001)


async def test_past_the_bound_a_list_is_refused_with_503_and_retry_after(
    client_for: ClientFor,
) -> None:
    settings = Settings(
        environment="test",
        redis_url="redis://fake",
        list_max_concurrency=2,
        list_retry_after_seconds=3,
    )
    slow = SlowStripeGateway()
    async with client_for(settings, redis=fakeredis.FakeAsyncRedis(), gateway=slow) as client:
        running = [asyncio.ensure_future(client.get("/cus_Abc123/payments")) for _ in range(2)]
        await _until(lambda: slow.started == 2)
        refused = await client.get("/cus_Abc123/payments")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "3"
        assert refused.json()["error"]["code"] == "list_busy"
        assert slow.started == 2  # the refused call never reached Stripe
        slow.release.set()
        answers = await asyncio.gather(*running)
        assert [a.status_code for a in answers] == [200, 200]
        assert answers[0].json()["data"][0]["id"] == "ch_1"
        # The slots are free again.
        assert (await client.get("/cus_Abc123/payments")).status_code == 200


async def test_a_failed_stripe_call_frees_its_slot(client_for: ClientFor) -> None:
    settings = Settings(environment="test", redis_url="redis://fake", list_max_concurrency=1)
    slow = SlowStripeGateway()
    slow.error = StripeUnavailable(headers={"Retry-After": "1"})
    slow.release.set()
    async with client_for(settings, redis=fakeredis.FakeAsyncRedis(), gateway=slow) as client:
        for _ in range(3):
            assert (await client.get("/cus_Abc123/payments")).status_code == 503
        slow.error = None
        assert (await client.get("/cus_Abc123/payments")).status_code == 200


async def test_accepts_are_not_bounded_by_the_list_bound(client_for: ClientFor) -> None:
    settings = Settings(environment="test", redis_url="redis://fake", list_max_concurrency=1)
    slow = SlowStripeGateway()
    body: dict[str, Any] = {"account_id": "cus_Abc123", "amount": "42.99"}
    async with client_for(settings, redis=fakeredis.FakeAsyncRedis(), gateway=slow) as client:
        listing = asyncio.ensure_future(client.get("/cus_Abc123/payments"))
        await _until(lambda: slow.started == 1)
        for _ in range(3):
            assert (await client.post("/payments", json=body)).status_code == 202
        slow.release.set()
        assert (await listing).status_code == 200


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        ListLimiter(0)


async def test_one_client_at_its_cap_leaves_slots_to_another() -> None:
    limiter = ListLimiter(4, client_cap=client_cap(4, 0.5, clients=3))
    a, b, c = Client(name="a"), Client(name="b"), Client(name="c")
    async with limiter.slot(a), limiter.slot(a):
        with pytest.raises(ListBusy, match="its share"):
            async with limiter.slot(a):
                pass
        async with limiter.slot(b), limiter.slot(b):
            # The bound for all holds too: a and b have every slot between them.
            with pytest.raises(ListBusy, match="Too many payment lists"):
                async with limiter.slot(c):
                    pass
        async with limiter.slot(c):
            assert limiter.by_client == {"a": 2, "c": 1}
    assert limiter.in_flight == 0
    assert limiter.by_client == {}


def test_a_client_s_cap_is_its_own_list_concurrency_else_its_share() -> None:
    limiter = ListLimiter(8, client_cap=client_cap(8, 0.25, clients=2))
    assert limiter.cap_for(Client(name="a")) == 2
    assert limiter.cap_for(Client(name="b", list_concurrency=5)) == 5
    assert limiter.cap_for(Client(name="c", list_concurrency=50)) == 8  # never past the bound
    assert client_cap(2, 0.1, clients=5) == 1  # always at least one
    assert client_cap(2, 0.5, clients=1) is None  # alone, a client may use every slot


def _key_digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


async def test_a_client_saturating_lists_cannot_keep_another_s_out(
    client_for: ClientFor,
) -> None:
    clients = [
        {"name": name, "keys": [_key_digest(name)], "scopes": ["customers:all"]}
        for name in ("busy", "calm")
    ]
    settings = Settings.model_validate(
        {"environment": "test", "redis_url": "redis://fake", "list_max_concurrency": 2,
         "api_clients": json.dumps(clients)}
    )  # fmt: skip
    slow = SlowStripeGateway()
    busy, calm = ({"Authorization": f"Bearer {name}"} for name in ("busy", "calm"))
    async with client_for(settings, redis=fakeredis.FakeAsyncRedis(), gateway=slow) as client:
        held = asyncio.ensure_future(client.get("/cus_Abc123/payments", headers=busy))
        await _until(lambda: slow.started == 1)
        refused = await client.get("/cus_Abc123/payments", headers=busy)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "list_busy"
        assert refused.headers["retry-after"] == "1"
        served = asyncio.ensure_future(client.get("/cus_Abc123/payments", headers=calm))
        await _until(lambda: slow.started == 2)  # the calm client's list reached Stripe
        slow.release.set()
        assert (await held).status_code == (await served).status_code == 200


async def test_a_list_waits_briefly_for_the_stripe_budget_or_is_told_when_to_come_back(
    client_for: ClientFor,
) -> None:
    settings = Settings(environment="test", redis_url="redis://fake", list_max_concurrency=2)
    redis = fakeredis.FakeAsyncRedis()
    slow = SlowStripeGateway()
    slow.release.set()
    budget = AsyncStripeBudgetStore(redis)
    limits = {"global": 25.0, "GET /v1/charges": 25.0}
    async with client_for(settings, redis=redis, gateway=slow) as client:
        # The fleet's lists booked the next 0.3 s of GET /v1/charges: this one waits its turn.
        await budget.book(["GET /v1/charges"] * 8, limits)
        started = asyncio.get_running_loop().time()
        assert (await client.get("/cus_Abc123/payments")).status_code == 200
        assert asyncio.get_running_loop().time() - started >= 0.25

        # Booked 2 s ahead: no wait on the event loop, 503 with when to come back, no call.
        await budget.book(["GET /v1/charges"] * 50, limits)
        refused = await client.get("/cus_Abc123/payments")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "list_busy"
        assert refused.headers["retry-after"] in ("2", "3")  # the ~2 s booked, rounded up
        assert slow.started == 1
