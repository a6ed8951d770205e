"""Scopes fail closed: a client without ``payments`` cannot pay, refund or read payments, one
without ``metrics`` cannot read /metrics (403 insufficient_scope, declared in the document); an
API_KEYS key keeps every route but the admin ones."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import httpx
import orjson
import pytest

from api.main import create_app
from shared.settings.service_settings import Settings
from tests.support import payment

CLIENTS = [
    {"name": "reader", "keys": ["key-metrics"], "scopes": ["metrics"]},
    {"name": "payer", "keys": ["key-payer"], "scopes": ["payments"]},
    {"name": "lister", "keys": ["key-lister"], "scopes": ["customers:all"]},
    {"name": "ops", "keys": ["key-admin"], "scopes": ["admin"]},
]
PLAIN_KEY = "key-plain"
PAYMENT_ID = "pay_000000000000000000000000"
PAYMENT_ROUTES = [
    ("POST", "/payments"),
    ("GET", "/payments"),
    ("GET", f"/payments/{PAYMENT_ID}"),
    ("POST", f"/payments/{PAYMENT_ID}/refunds"),
    ("GET", f"/payments/{PAYMENT_ID}/refunds/re_000000000000000000000000"),
    ("POST", f"/payments/{PAYMENT_ID}/cancel"),
]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(params=[True, False], ids=["fast-path", "router"])
async def api(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        environment="test",
        redis_url="redis://fake",
        api_keys=PLAIN_KEY,
        api_clients=orjson.dumps(CLIENTS).decode(),
    )
    app = create_app(settings, redis=fakeredis.FakeAsyncRedis(), fast_accept=request.param)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.mark.parametrize(("method", "path"), PAYMENT_ROUTES)
@pytest.mark.parametrize("key", ["key-metrics", "key-lister"])
async def test_without_payments_no_payment_route(
    api: httpx.AsyncClient, key: str, method: str, path: str
) -> None:
    response = await api.request(method, path, json=payment(), headers=bearer(key))
    assert response.status_code == 403
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", "insufficient_scope")
    assert "`payments`" in error["message"]


async def test_a_refused_accept_queues_nothing(api: httpx.AsyncClient) -> None:
    refused = await api.post(
        "/payments", json=payment(), headers={**bearer("key-metrics"), "Idempotency-Key": "k1"}
    )
    assert refused.status_code == 403
    for key in ("key-payer", PLAIN_KEY, "key-admin"):
        accepted = await api.post("/payments", json=payment(), headers=bearer(key))
        assert accepted.status_code == 202, key
        read = await api.get(accepted.headers["Location"], headers=bearer(key))
        assert read.status_code == 200, key


async def test_listing_needs_payments_or_customers_all(api: httpx.AsyncClient) -> None:
    refused = await api.get("/cus_Abc123/payments", headers=bearer("key-metrics"))
    assert refused.status_code == 403
    assert "`customers:all`" in refused.json()["error"]["message"]


@pytest.mark.parametrize("key", ["key-payer", "key-lister"])
async def test_metrics_needs_metrics_or_admin(api: httpx.AsyncClient, key: str) -> None:
    refused = await api.get("/metrics", headers=bearer(key))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    assert "payments_http_requests_total" not in refused.text


@pytest.mark.parametrize("key", ["key-metrics", "key-admin", PLAIN_KEY])
async def test_metrics_for_metrics_admin_and_a_plain_api_key(
    api: httpx.AsyncClient, key: str
) -> None:
    response = await api.get("/metrics", headers=bearer(key))
    assert response.status_code == 200
    assert "payments_queue_depth" in response.text


async def test_the_document_declares_the_403(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/openapi.json")).json()
    for method, path in [*PAYMENT_ROUTES, ("GET", "/metrics"), ("GET", "/{customer_id}/payments")]:
        template = path.replace(PAYMENT_ID, "{payment_id}").replace(
            "re_000000000000000000000000", "{refund_id}"
        )
        answers = schema["paths"][template][method.lower()]["responses"]
        example = answers["403"]["content"]["application/json"]["examples"]["insufficient_scope"]
        assert example["value"]["error"]["type"] == "permission_error", (method, path)
