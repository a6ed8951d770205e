"""Every authenticated route takes one token of its client's bucket per request, valid or not:
past the budget each answers 429 with Retry-After, RateLimit-Policy and RateLimit, and its
OpenAPI operation says so; the routes without a client key never do."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import httpx
import pytest
from fastapi import FastAPI

from api.auth import OPEN_PATHS
from api.main import create_app
from shared.settings.service_settings import Settings
from shared.store.keys import record_key
from tests.support import FakeListGateway, app_client, payment

TIGHT, ROOMY, ADMIN = "tight-key", "roomy-key", "admin-key"


def digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


CLIENTS = [
    # 3 requests, then one every 100 s: nothing refills while a test runs.
    {
        "name": "tight",
        "keys": [digest(TIGHT)],
        "scopes": ["payments", "metrics"],
        "max_rps": 0.01,
        "burst": 3,
    },
    {"name": "roomy", "keys": [digest(ROOMY)], "scopes": ["payments", "metrics"]},
    {"name": "ops", "keys": [digest(ADMIN)], "scopes": ["admin"], "max_rps": 0.01, "burst": 1},
]
# A value for each path parameter of the document's routes.
PATH_VALUES = {
    "payment_id": "pay_" + "0" * 24,
    "refund_id": "ref_" + "0" * 24,
    "customer_id": "cus_Abc123",
}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def redis(server: fakeredis.FakeServer) -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis(server=server)


@pytest.fixture
def app(redis: fakeredis.FakeAsyncRedis) -> FastAPI:
    settings = Settings.model_validate(
        {"environment": "test", "redis_url": "redis://fake", "api_clients": json.dumps(CLIENTS)}
    )
    return create_app(settings, redis=redis)


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app, gateway=FakeListGateway()) as client:
        yield client


def operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in app.openapi()["paths"].items()
        for method, operation in methods.items()
    ]


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)


def assert_refused_for_rate(answer: httpx.Response) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.json()["error"]["code"] == "rate_limited"
    assert int(answer.headers["retry-after"]) >= 1
    assert answer.headers["ratelimit-policy"].startswith('"client";q=')
    assert answer.headers["ratelimit"].startswith('"client";r=0;t=')


async def test_every_guarded_route_answers_429_past_the_budget_and_declares_it(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    for _ in range(3):  # the tight client's whole burst, on a route that answers 404
        spent = await api.get(concrete("/payments/{payment_id}"), headers=auth(TIGHT))
        assert spent.status_code == 404
    guarded = [(m, p, op) for m, p, op in operations(app) if p not in OPEN_PATHS]
    assert len(guarded) >= 8
    for method, path, operation in guarded:
        body = payment() if method == "POST" else None
        answer = await api.request(method, concrete(path), json=body, headers=auth(TIGHT))
        assert_refused_for_rate(answer)
        declared = operation["responses"]["429"]["headers"]
        assert {"Retry-After", "RateLimit-Policy", "RateLimit"} <= set(declared), path
    # Another client's budget is its own.
    assert (await api.post("/payments", json=payment(), headers=auth(ROOMY))).status_code == 202


async def test_the_routes_without_a_client_key_take_no_token(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    await api.get("/metrics", headers=auth(ADMIN))  # the admin's one token
    assert_refused_for_rate(await api.get("/metrics", headers=auth(ADMIN)))
    for _ in range(3):
        for path in ("/healthz", "/docs", "/openapi.json"):
            assert (await api.get(path, headers=auth(ADMIN))).status_code == 200
        unsigned = await api.post("/webhooks/stripe", json={}, headers=auth(ADMIN))
        assert unsigned.status_code == 400
    for method, path, operation in operations(app):
        if path in OPEN_PATHS:
            assert "429" not in operation["responses"], f"{method} {path}"


async def test_invalid_requests_take_a_token_too(api: httpx.AsyncClient) -> None:
    bad_json = await api.post(
        "/payments", content=b"{", headers=auth(TIGHT) | {"content-type": "application/json"}
    )
    bad_key = await api.post(
        "/payments", json=payment(), headers=auth(TIGHT) | {"Idempotency-Key": "k" * 256}
    )
    bad_amount = await api.post("/payments", json=payment(amount="-1"), headers=auth(TIGHT))
    assert [a.status_code for a in (bad_json, bad_key, bad_amount)] == [400, 400, 400]
    assert [a.headers["ratelimit"].split(";")[1] for a in (bad_json, bad_key, bad_amount)] == [
        "r=2",
        "r=1",
        "r=0",
    ]
    # The budget is spent: a fourth invalid request, and now a valid one, are refused for rate.
    assert_refused_for_rate(await api.post("/payments", json={}, headers=auth(TIGHT)))
    assert_refused_for_rate(await api.post("/payments", json=payment(), headers=auth(TIGHT)))


async def test_refunds_and_their_reads_take_a_token(
    api: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    created = await api.post("/payments", json=payment(), headers=auth(TIGHT))
    assert created.status_code == 202
    payment_id = created.json()["id"]
    await redis.hset(record_key(payment_id), mapping={"status": "succeeded", "charge": "ch_1"})
    path = f"/payments/{payment_id}/refunds"
    refund = await api.post(path, json={"amount": "1.00"}, headers=auth(TIGHT))
    assert refund.status_code == 202
    assert refund.headers["ratelimit"].startswith('"client";r=1;')
    read = await api.get(f"{path}/{refund.json()['id']}", headers=auth(TIGHT))
    assert read.status_code == 200
    assert read.headers["ratelimit"].startswith('"client";r=0;')
    assert_refused_for_rate(await api.post(path, json={"amount": "1.00"}, headers=auth(TIGHT)))
    exposed = (await api.get("/metrics", headers=auth(ROOMY))).text
    assert 'payments_client_requests_total{client="tight",outcome="limited"} 1.0' in exposed
    refused = 'payments_http_requests_total{method="POST",route="/payments/{payment_id}/refunds"'
    assert f'{refused},status="429"}} 1.0' in exposed


async def test_with_redis_down_a_request_is_answered_by_its_route(
    api: httpx.AsyncClient, server: fakeredis.FakeServer
) -> None:
    server.connected = False
    down = await api.get(concrete("/payments/{payment_id}"), headers=auth(TIGHT))
    assert down.status_code == 503
    assert down.json()["error"]["code"] == "redis_unavailable"
    assert (await api.get("/metrics", headers=auth(TIGHT))).status_code == 200
