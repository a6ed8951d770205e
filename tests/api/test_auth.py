"""Nobody without a key charges or reads anything; health checks stay open to probes."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import fakeredis
import httpx
import pytest

from api.main import create_app
from shared.config import Settings
from tests.api.conftest import payment

KEY = "test-client-key-1"
OTHER = "test-client-key-2"


@pytest.fixture
async def secured() -> AsyncIterator[httpx.AsyncClient]:
    digest = hashlib.sha256(OTHER.encode()).hexdigest()
    settings = Settings(
        environment="test", redis_url="redis://fake", api_keys=f"{KEY},sha256:{digest}"
    )
    app = create_app(settings, redis=fakeredis.FakeAsyncRedis())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer wrong-key", f"Basic {KEY}", f"bearer{KEY}"]
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/payments"),
        ("GET", "/payments/pay_000000000000000000000000"),
        ("GET", "/cus_Abc123/payments"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
    ],
)
async def test_every_route_but_health_needs_a_valid_key(
    secured: httpx.AsyncClient, authorization: str | None, method: str, path: str
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = await secured.request(method, path, json=payment(), headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_configured_key_or_its_sha256_digest_lets_a_client_in(
    secured: httpx.AsyncClient,
) -> None:
    for key in (KEY, OTHER):
        response = await secured.post(
            "/payments", json=payment(), headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 202


async def test_health_checks_need_no_key(secured: httpx.AsyncClient) -> None:
    assert (await secured.get("/healthz")).status_code == 200
    assert (await secured.get("/readyz")).status_code == 200


async def test_idempotency_keys_are_per_client(secured: httpx.AsyncClient) -> None:
    same_key = {"Idempotency-Key": "order-1"}
    mine = await secured.post(
        "/payments", json=payment(), headers={**same_key, "Authorization": f"Bearer {KEY}"}
    )
    theirs = await secured.post(
        "/payments",
        json=payment(amount="10.00"),
        headers={**same_key, "Authorization": f"Bearer {OTHER}"},
    )
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["id"] != theirs.json()["id"]


async def test_oversized_headers_are_refused_before_any_route(secured: httpx.AsyncClient) -> None:
    response = await secured.get("/healthz", headers={"X-Padding": "x" * 20_000})
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "headers_too_large"


def test_production_refuses_to_start_without_client_keys() -> None:
    settings = Settings(environment="production", stripe_api_key="sk_live_x")
    with pytest.raises(RuntimeError, match="API_KEYS is required"):
        create_app(settings)


async def test_the_document_offers_the_bearer_key_to_every_guarded_route(
    secured: httpx.AsyncClient,
) -> None:
    """What Swagger UI's "Authorize" (at /docs) and generated clients go by."""
    response = await secured.get("/openapi.json", headers={"Authorization": f"Bearer {KEY}"})
    schema = response.json()

    scheme = schema["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            if path in ("/healthz", "/readyz"):
                assert "security" not in operation
            else:
                assert operation["security"] == [{"bearer": []}]
                assert "401" in operation["responses"]
