"""Reads cannot starve accepts: at most LIST_MAX_CONCURRENCY Stripe list calls at once per API
process; one more is answered 503 ``list_busy`` with Retry-After at once, and the slots free up
when the calls end (also when they fail). Stripe is faked at the gateway boundary, slow."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import fakeredis
import httpx
import pytest

from api.list_limit import ListLimiter
from shared.errors import StripeUnavailable
from shared.settings.service_settings import Settings
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
