"""Clients are tenants: each sees only its own payments, and its own charges of the customers
it has paid, within its own request rate and share of the backlog; admins see all and manage
dead letters."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import fakeredis
import httpx
import pytest

from api.main import create_app
from shared.payments.states import Status
from shared.settings.api_clients import ClientConfigError, load
from shared.settings.service_settings import Settings
from shared.store import PaymentStore
from shared.store.keys import DEAD_LETTERS, record_key
from shared.store.lifecycle_store import LifecycleStore, Transition
from shared.stripe.objects import ChargePage, ChargeSummary
from shared.stripe.outcomes import not_charged
from tests.support import FakeListGateway, app_client, payment

SHOP, OTHER, ADMIN, OLD = "shop-key", "other-key", "admin-key", "old-shop-key"


def digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


CLIENTS = [
    {"name": "shop", "keys": [digest(SHOP), {"digest": digest(OLD), "not_after": "2000-01-01"}]},
    {"name": "other", "keys": [digest(OTHER)], "max_rps": 2, "burst": 3},
    {"name": "ops", "keys": [digest(ADMIN)], "scopes": ["admin"]},
]


def settings(**extra: object) -> Settings:
    return Settings.model_validate(
        {"environment": "test", "redis_url": "redis://fake", "api_clients": json.dumps(CLIENTS),
         "api_keys": "legacy-key", **extra}
    )  # fmt: skip


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis()


@pytest.fixture
async def api(redis: fakeredis.FakeAsyncRedis) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings(), redis=redis)
    gateway = FakeListGateway()
    for customer in ("cus_Paid1", "cus_Other9"):
        gateway.pages[customer] = ChargePage(data=[], has_more=False)
    async with app_client(app, gateway=gateway) as client:
        yield client


def test_the_client_configuration_is_checked_at_start() -> None:
    registry = load(settings())
    assert {c.name for c in registry.clients} >= {"shop", "other", "ops"}
    bad = [
        [{"name": "x", "keys": [digest("k")], "scopes": ["everything"]}],
        [{"name": "x", "keys": []}],
        [{"name": "x", "keys": ["sha256:nothex"]}],
        [{"name": "x", "keys": [digest("k")]}, {"name": "x", "keys": [digest("j")]}],
    ]
    for spec in bad:
        with pytest.raises(ClientConfigError):
            load(Settings(environment="test", api_clients=json.dumps(spec)))


async def test_a_payment_is_visible_to_its_client_and_admins_only(api: httpx.AsyncClient) -> None:
    created = await api.post("/payments", json=payment(), headers=auth(SHOP))
    assert created.status_code == 202
    path = f"/payments/{created.json()['id']}"

    assert (await api.get(path, headers=auth(SHOP))).status_code == 200
    assert (await api.get(path, headers=auth(ADMIN))).status_code == 200
    hidden = await api.get(path, headers=auth(OTHER))
    unknown = await api.get("/payments/pay_" + "0" * 24, headers=auth(OTHER))
    assert hidden.status_code == unknown.status_code == 404  # not 403: ids cannot be probed
    assert hidden.json()["error"]["code"] == unknown.json()["error"]["code"]


async def test_refunds_follow_their_payment_s_visibility(
    api: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    created = await api.post("/payments", json=payment(), headers=auth(SHOP))
    payment_id = created.json()["id"]
    await redis.hset(record_key(payment_id), mapping={"status": "succeeded", "charge": "ch_1"})
    path = f"/payments/{payment_id}/refunds"

    refused = await api.post(path, json={"amount": "1.00"}, headers=auth(OTHER))
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "payment_not_found"
    made = await api.post(path, json={"amount": "1.00"}, headers=auth(SHOP))
    assert made.status_code == 202
    by_admin = await api.post(path, json={"amount": "1.00"}, headers=auth(ADMIN))
    assert by_admin.status_code == 202

    one = f"{path}/{made.json()['id']}"
    assert (await api.get(one, headers=auth(SHOP))).status_code == 200
    assert (await api.get(one, headers=auth(ADMIN))).status_code == 200
    assert (await api.get(one, headers=auth(OTHER))).status_code == 404


async def test_the_same_key_from_two_clients_is_two_payments(api: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "order-1"}
    one = await api.post("/payments", json=payment(), headers=auth(SHOP) | key)
    two = await api.post("/payments", json=payment(amount="10.00"), headers=auth(OTHER) | key)
    assert one.status_code == two.status_code == 202
    assert one.json()["id"] != two.json()["id"]


async def test_an_expired_rotated_key_is_refused(api: httpx.AsyncClient) -> None:
    refused = await api.post("/payments", json=payment(), headers=auth(OLD))
    assert refused.status_code == 401


def _charge(charge_id: str) -> ChargeSummary:
    return ChargeSummary(id=charge_id, amount="1.00", currency="usd", status="succeeded",
                         created=1, payment_intent=None, description="secret order",
                         payment_id=None, failure_code=None, refunded=False)  # fmt: skip


async def test_a_client_lists_a_customer_once_its_payment_succeeded_and_sees_its_own_only() -> None:
    server = fakeredis.FakeServer()
    gateway = FakeListGateway()
    gateway.pages["cus_Paid1"] = ChargePage(
        data=[_charge("ch_shop1"), _charge("ch_other1"), _charge("ch_none1")],
        has_more=False,
        owners=("shop", "other", None),
    )
    gateway.pages["cus_Other9"] = ChargePage(data=[], has_more=False)
    app = create_app(settings(), redis=fakeredis.FakeAsyncRedis(server=server))
    workers = LifecycleStore(fakeredis.FakeRedis(server=server), settings())
    payments = PaymentStore(fakeredis.FakeRedis(server=server), settings())
    async with app_client(app, gateway=gateway) as api:

        async def listed(key: str, customer: str = "cus_Paid1") -> httpx.Response:
            return await api.get(f"/{customer}/payments", headers=auth(key))

        made = await api.post("/payments", json=payment(account_id="cus_Paid1"),
                              headers=auth(SHOP))  # fmt: skip
        payment_id = made.json()["id"]
        # A charge made before charges named their client: its payment's record says whose.
        old = replace(_charge("ch_old1"), payment_id=payment_id)
        page = gateway.pages["cus_Paid1"]
        gateway.pages["cus_Paid1"] = replace(
            page, data=[*page.data, old], owners=(*page.owners, None)
        )
        # Accepted, then failed: no right to list the customer.
        assert (await listed(SHOP)).status_code == 404
        payments.finish(payment_id, status=Status.FAILED, fields={})
        refused = await listed(SHOP)
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "customer_not_found"
        # Succeeded: the client lists the customer, and sees its own charges only.
        workers.transition(payment_id, Transition(Status.SUCCEEDED, {}))
        own = await listed(SHOP)
        assert own.status_code == 200
        assert [c["id"] for c in own.json()["data"]] == ["ch_shop1", "ch_old1"]
        assert (await listed(SHOP, "cus_Other9")).status_code == 404
        assert (await listed(OTHER)).status_code == 404
        everyone = await listed(ADMIN)
        assert [c["id"] for c in everyone.json()["data"]] == [
            "ch_shop1",
            "ch_other1",
            "ch_none1",
            "ch_old1",
        ]
        assert (await listed(ADMIN, "cus_Other9")).status_code == 200


async def test_over_its_rate_a_client_gets_429_with_the_ratelimit_fields(
    api: httpx.AsyncClient,
) -> None:
    answers = [await api.post("/payments", json=payment(), headers=auth(OTHER)) for _ in range(4)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    limited = answers[-1]
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["ratelimit-policy"] == '"client";q=3;w=2'
    assert limited.headers["ratelimit"].startswith('"client";r=0;t=')
    assert answers[0].headers["ratelimit"].startswith('"client";r=2;')
    # Another client is not affected.
    assert (await api.post("/payments", json=payment(), headers=auth(SHOP))).status_code == 202
    exposed = (await api.get("/metrics", headers=auth(ADMIN))).text
    assert 'payments_client_requests_total{client="other",outcome="limited"} 1.0' in exposed
    assert 'payments_client_requests_total{client="other",outcome="accepted"} 3.0' in exposed


async def test_a_client_cannot_hold_more_than_its_share_of_the_backlog(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    app = create_app(settings(queue_max_backlog=8, client_max_rps=0), redis=redis)
    async with app_client(app, gateway=FakeListGateway()) as api:
        # Five clients (shop, other, ops, the API_KEYS one...): an equal share is 8/4 = 2.
        answers = [
            await api.post("/payments", json=payment(), headers=auth(SHOP)) for _ in range(3)
        ]
        others = await api.post("/payments", json=payment(), headers=auth(OTHER))
    assert [a.status_code for a in answers] == [202, 202, 503]
    assert answers[-1].json()["error"]["code"] == "queue_full"
    assert others.status_code == 202  # still accepted for the others


async def test_an_admin_lists_and_replays_dead_letters_others_cannot() -> None:
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeAsyncRedis(server=server)
    app = create_app(settings(), redis=redis)
    async with app_client(app, gateway=FakeListGateway()) as api:
        # The admin routes' blocking store, on the same (fake) Redis.
        app.state.admin_store = PaymentStore(fakeredis.FakeRedis(server=server), settings())
        created = (await api.post("/payments", json=payment(), headers=auth(SHOP))).json()
        payment_id = created["id"]
        error = json.dumps(not_charged(5).to_dict())
        await redis.hset(record_key(payment_id), mapping={"status": Status.FAILED.value,
                         "error": error, "error_status": "503"})  # fmt: skip
        await redis.zadd(DEAD_LETTERS, {payment_id: time.time()})

        assert (await api.get("/admin/dead-letters", headers=auth(SHOP))).status_code == 404
        listed = await api.get("/admin/dead-letters", headers=auth(ADMIN))
        assert [d["id"] for d in listed.json()["data"]] == [payment_id]
        path = f"/admin/dead-letters/{payment_id}/replay"
        assert (await api.post(path, headers=auth(SHOP))).status_code == 404
        assert (await api.post(path, headers=auth(ADMIN))).status_code == 200
        assert (await api.post(path, headers=auth(ADMIN))).status_code == 404  # not one now
        polled = await api.get(f"/payments/{payment_id}", headers=auth(SHOP))
    assert polled.json()["status"] == "queued"


async def test_answers_are_counted_by_route_template_and_status(api: httpx.AsyncClient) -> None:
    await api.get("/payments/pay_" + "1" * 24, headers=auth(SHOP))
    await api.get("/payments/pay_" + "2" * 24, headers=auth(SHOP))
    exposed = (await api.get("/metrics", headers=auth(ADMIN))).text
    line = 'payments_http_requests_total{method="GET",route="/payments/{payment_id}",status="404"}'
    assert f"{line} 2.0" in exposed
