"""API unit tests: the real app over ASGI, Redis faked by fakeredis, Stripe faked at the gateway.

Fixtures only; the helpers (``payment``, ``FakeListGateway``, ``app_client``,
``fake_worker_records``) are in ``tests/support.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import fakeredis
import httpx
import pytest
from fastapi import FastAPI

from api.main import create_app
from shared.settings.service_settings import Settings
from tests.support import FakeListGateway, app_client

ClientFor = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def settings() -> Settings:
    # No client key: an open API, as API_ALLOW_ANONYMOUS asks (tests of keys build their own).
    return Settings(environment="test", redis_url="redis://fake", api_allow_anonymous=True)


@pytest.fixture
def redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis()


@pytest.fixture
def gateway() -> FakeListGateway:
    return FakeListGateway()


@pytest.fixture
def app(settings: Settings, redis: fakeredis.FakeAsyncRedis) -> FastAPI:
    return create_app(settings, redis=redis)


@pytest.fixture
async def client(app: FastAPI, gateway: FakeListGateway) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the app built from the ``settings``, ``redis`` and ``gateway`` fixtures."""
    async with app_client(app, gateway=gateway) as c:
        yield c


@pytest.fixture
def client_for() -> ClientFor:
    """For an app with other settings, Redis or gateway:
    ``async with client_for(settings, redis=None, gateway=None) as client:`` (``None``: the
    app connects to ``settings.redis_url`` and Stripe itself)."""

    def make(
        settings: Settings,
        redis: fakeredis.FakeAsyncRedis | None = None,
        gateway: FakeListGateway | None = None,
    ) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return app_client(create_app(settings, redis=redis), gateway=gateway)

    return make
