"""POST /webhooks/stripe: verified over the raw body, taken once, its task enqueued."""

from __future__ import annotations

import json
import time
from typing import Any

import fakeredis
import httpx
import pytest

from shared.settings.service_settings import Settings
from shared.store.keys import WEBHOOK_COUNTS
from tests.api.conftest import ClientFor
from tests.support import QUEUE, WEBHOOK_SECRET, stripe_event, stripe_signature

OTHER_SECRET = "whsec_other"
PI = {"id": "pi_123", "object": "payment_intent", "metadata": {"payment_id": "pay_x"}}


@pytest.fixture
def settings() -> Settings:
    # A client key is configured: the webhook route must not need it.
    return Settings(
        environment="test",
        redis_url="redis://fake",
        api_keys="client-key",
        stripe_webhook_secret=f"{OTHER_SECRET}, {WEBHOOK_SECRET}",
    )


async def post_event(
    client: httpx.AsyncClient, body: bytes, signature: str | None
) -> httpx.Response:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return await client.post("/webhooks/stripe", content=body, headers=headers)


async def queued(redis: fakeredis.FakeAsyncRedis) -> list[dict[str, Any]]:
    return [json.loads(m) for m in await redis.lrange(QUEUE, 0, -1)]


async def test_a_signed_event_is_taken_without_a_client_key_and_its_task_enqueued(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    body = stripe_event("payment_intent.succeeded", PI, event_id="evt_1")

    response = await post_event(client, body, stripe_signature(body, WEBHOOK_SECRET))

    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False, "ignored": False}
    (message,) = await queued(redis)
    assert message["headers"]["task"] == "payments.stripe_event"
    assert message["headers"]["id"] == "evt_1"
    assert message["headers"]["argsrepr"] == repr(
        ("evt_1", "payment_intent.succeeded", "pi_123", "")
    )


async def test_the_same_event_twice_is_enqueued_once(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    body = stripe_event("payment_intent.succeeded", PI, event_id="evt_dup")
    first = await post_event(client, body, stripe_signature(body, WEBHOOK_SECRET))
    again = await post_event(client, body, stripe_signature(body, WEBHOOK_SECRET))

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json()["duplicate"] is True
    assert len(await queued(redis)) == 1
    counts = await redis.hgetall(WEBHOOK_COUNTS)
    assert counts[b"payment_intent.succeeded|received"] == b"1"
    assert counts[b"payment_intent.succeeded|duplicate"] == b"1"


async def test_a_secret_being_rotated_in_verifies_too(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    body = stripe_event("payment_intent.succeeded", PI)

    response = await post_event(client, body, stripe_signature(body, OTHER_SECRET))

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("case", "signature"),
    [
        ("missing", lambda body: None),
        ("malformed", lambda body: "v1=abc"),
        ("garbage", lambda body: "not a signature at all"),
        ("wrong secret", lambda body: stripe_signature(body, "whsec_wrong")),
        ("stale", lambda body: stripe_signature(body, WEBHOOK_SECRET, int(time.time()) - 301)),
        ("other body", lambda body: stripe_signature(body + b" ", WEBHOOK_SECRET)),
    ],
)
async def test_a_bad_signature_is_a_400_and_nothing_is_recorded(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis, case: str, signature: Any
) -> None:
    body = stripe_event("payment_intent.succeeded", PI)

    response = await post_event(client, body, signature(body))

    assert response.status_code == 400, case
    assert response.json()["error"]["code"] == "signature_invalid"
    assert await redis.keys("*") == []


async def test_no_configured_secret_verifies_nothing(
    client_for: ClientFor, redis: fakeredis.FakeAsyncRedis
) -> None:
    body = stripe_event("payment_intent.succeeded", PI)
    async with client_for(Settings(environment="test", redis_url="redis://fake"), redis) as c:
        response = await post_event(c, body, stripe_signature(body, WEBHOOK_SECRET))
    assert response.status_code == 400
    assert await redis.keys("*") == []


async def test_other_event_types_are_answered_and_counted_not_enqueued(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    body = stripe_event("customer.created", {"id": "cus_1", "object": "customer"})

    response = await post_event(client, body, stripe_signature(body, WEBHOOK_SECRET))

    assert response.status_code == 200
    assert response.json()["ignored"] is True
    assert await queued(redis) == []
    assert (await redis.hgetall(WEBHOOK_COUNTS)) == {b"other|ignored": b"1"}


async def test_redis_down_is_a_503_so_that_stripe_retries(client_for: ClientFor) -> None:
    settings = Settings(
        environment="test",
        redis_url="redis://127.0.0.1:1/0",
        stripe_webhook_secret=WEBHOOK_SECRET,
    )
    body = stripe_event("payment_intent.succeeded", PI)
    async with client_for(settings) as c:
        response = await post_event(c, body, stripe_signature(body, WEBHOOK_SECRET))
    assert response.status_code == 503
    assert "retry-after" in response.headers


async def test_the_route_needs_no_key_but_others_still_do(client: httpx.AsyncClient) -> None:
    assert (await client.get("/payments/pay_000000000000000000000000")).status_code == 401
