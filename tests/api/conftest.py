"""API unit tests: the real app over ASGI, Redis faked by fakeredis, Stripe faked at the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import httpx
import pytest
from fastapi import FastAPI

from api.main import create_app
from shared.config import Settings
from shared.stripe_gateway import ChargePage


class FakeListGateway:
    """Stands in for Stripe's charge list at the gateway boundary."""

    def __init__(self) -> None:
        self.pages: dict[str, ChargePage] = {}
        self.error: Exception | None = None

    async def list_charges(
        self, *, customer: str, limit: int, starting_after: str | None
    ) -> ChargePage:
        if self.error is not None:
            raise self.error
        return self.pages[customer]


@pytest.fixture
def settings() -> Settings:
    return Settings(environment="test", redis_url="redis://fake")


@pytest.fixture
def redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis()


@pytest.fixture
def gateway() -> FakeListGateway:
    return FakeListGateway()


@pytest.fixture
async def app(
    settings: Settings, redis: fakeredis.FakeAsyncRedis, gateway: FakeListGateway
) -> AsyncIterator[FastAPI]:
    application = create_app(settings, redis=redis)
    async with application.router.lifespan_context(application):
        application.state.gateway = gateway
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def payment(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"account_id": "cus_Abc123", "amount": "42.99"}
    body.update(overrides)
    return body
