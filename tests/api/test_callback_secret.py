"""``GET /clients/me/callback-secret``: each client reads the secret its own callbacks are
signed with (derived from the masters and its name, or its own from API_CLIENTS), never
another's; during a rotation every secret that signs."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import fakeredis
import httpx
import orjson
import pytest

from api.main import create_app
from shared.callbacks.signing import derived_secret
from shared.settings.api_clients import legacy_name
from shared.settings.service_settings import Settings

MASTER = "whsec_" + base64.b64encode(b"m" * 32).decode()
OLD_MASTER = "whsec_" + base64.b64encode(b"o" * 32).decode()
OWN = "whsec_" + base64.b64encode(b"c" * 32).decode()
CLIENTS = [
    {"name": "shop-eu", "keys": ["key-eu"]},
    {"name": "shop-us", "keys": ["key-us"], "callback_signing_secrets": [OWN]},
]
PLAIN_KEY = "key-plain"

Api = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def api() -> Api:
    @asynccontextmanager
    async def make(masters: str = MASTER) -> AsyncIterator[httpx.AsyncClient]:
        settings = Settings(
            environment="test",
            redis_url="redis://fake",
            api_keys=PLAIN_KEY,
            api_clients=orjson.dumps(CLIENTS).decode(),
            callback_signing_secrets=masters,
        )
        app = create_app(settings, redis=fakeredis.FakeAsyncRedis())
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                yield c

    return make


async def secret_of(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.get(
        "/clients/me/callback-secret", headers={"Authorization": f"Bearer {key}"}
    )


async def test_each_client_reads_its_own_derived_secret(api: Api) -> None:
    async with api() as client:
        eu = await secret_of(client, "key-eu")
        plain = await secret_of(client, PLAIN_KEY)
    assert eu.status_code == plain.status_code == 200
    assert eu.headers["cache-control"] == "no-store"
    assert eu.json() == {
        "object": "callback_secret",
        "client": "shop-eu",
        "secret": derived_secret(MASTER, "shop-eu"),
        "secrets": [derived_secret(MASTER, "shop-eu")],
        "source": "derived",
    }
    plain_name = legacy_name(hashlib.sha256(PLAIN_KEY.encode()).digest())
    assert plain.json()["secret"] == derived_secret(MASTER, plain_name)
    assert len({eu.json()["secret"], plain.json()["secret"], MASTER}) == 3


async def test_a_configured_secret_is_read_as_configured(api: Api) -> None:
    async with api() as client:
        us = (await secret_of(client, "key-us")).json()
    assert (us["secret"], us["source"]) == (OWN, "configured")


async def test_during_a_rotation_every_signing_secret_is_shown_the_current_first(
    api: Api,
) -> None:
    async with api(f"{MASTER},{OLD_MASTER}") as client:
        eu = (await secret_of(client, "key-eu")).json()
    assert eu["secrets"] == [
        derived_secret(MASTER, "shop-eu"),
        derived_secret(OLD_MASTER, "shop-eu"),
    ]
    assert eu["secret"] == eu["secrets"][0]


async def test_no_master_no_secret(api: Api) -> None:
    async with api("") as client:
        eu = await secret_of(client, "key-eu")
        us = await secret_of(client, "key-us")
    assert eu.status_code == 404
    assert eu.json()["error"]["code"] == "callback_secret_missing"
    assert us.status_code == 200  # its own needs no master


async def test_without_a_key_nothing(api: Api) -> None:
    async with api() as client:
        response = await client.get("/clients/me/callback-secret")
    assert response.status_code == 401
    assert "whsec_" not in response.text


def test_the_derivation_is_the_documented_one() -> None:
    """docs/API.md: whsec_ + base64(HMAC-SHA256(the master's key bytes, the client name))."""
    import hmac

    key = base64.b64decode(MASTER.removeprefix("whsec_"))
    expected = hmac.new(key, b"shop-eu", hashlib.sha256).digest()
    assert derived_secret(MASTER, "shop-eu") == "whsec_" + base64.b64encode(expected).decode()
