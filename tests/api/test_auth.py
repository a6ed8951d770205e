"""Nobody without a key charges or reads anything; health checks stay open to probes."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import fakeredis
import httpx
import pytest

from api.main import create_app
from shared.settings.service_settings import Settings
from tests.support import payment

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
        ("GET", "/metrics"),
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
            if path in ("/healthz", "/readyz", "/webhooks/stripe"):  # signed by Stripe instead
                assert "security" not in operation
            else:
                assert operation["security"] == [{"bearer": []}]
                assert "401" in operation["responses"]


async def test_one_constant_time_comparison_per_request_however_many_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The presented key's digest is looked up, then compared once (hmac.compare_digest),
    whether it is known or not: no loop over the configured keys, no shortcut on a miss."""
    import hmac

    keys = [f"client-key-{i}" for i in range(50)]
    settings = Settings(environment="test", redis_url="redis://fake", api_keys=",".join(keys))
    calls: list[tuple[bytes, bytes]] = []
    real_compare = hmac.compare_digest

    def counting_compare(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr("api.auth.hmac.compare_digest", counting_compare)
    app = create_app(settings, redis=fakeredis.FakeAsyncRedis())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for key, status in ((keys[37], 404), ("not-a-key", 401), (keys[0], 404)):
                calls.clear()
                response = await client.get(
                    "/payments/pay_000000000000000000000000",
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert response.status_code == status
                assert len(calls) == 1
                presented, expected = calls[0]
                assert presented == hashlib.sha256(key.encode()).digest()
                assert len(expected) == len(presented) == 32


def test_a_wrong_key_is_refused_and_a_right_one_identified() -> None:
    from api.auth import RequestContextMiddleware

    digest = hashlib.sha256(OTHER.encode()).hexdigest()
    settings = Settings(environment="test", api_keys=f"{KEY},sha256:{digest.upper()}")
    middleware = RequestContextMiddleware(app=None, settings=settings)  # type: ignore[arg-type]
    one = middleware._identify(f"Bearer {KEY}".encode())
    other = middleware._identify(f"Bearer  {OTHER} ".encode())
    assert one is not None
    assert other is not None
    # An API_KEYS entry is named by its digest's first 12 hex digits (in logs and payment ids).
    assert one.name == "key_" + hashlib.sha256(KEY.encode()).hexdigest()[:12]
    assert other.name == "key_" + digest[:12]
    for wrong in (
        b"",
        b"Bearer",
        b"Bearer ",
        f"Basic {KEY}".encode(),
        f"Bearer {KEY}x".encode(),
        f"Bearer {digest}".encode(),  # the digest itself is not the key
        b"Bearer " + bytes(32).hex().encode(),
    ):
        assert middleware._identify(wrong) is None, wrong


async def test_the_docs_open_in_a_browser_without_a_key(secured: httpx.AsyncClient) -> None:
    page = await secured.get("/docs")
    document = await secured.get("/openapi.json")
    assert page.status_code == 200
    assert "swagger" in page.text.lower()
    assert document.status_code == 200
    assert document.json()["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
