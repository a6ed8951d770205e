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
    client: httpx.AsyncClient, body: bytes, signature: str | bytes | None
) -> httpx.Response:
    """POST ``body``; a ``bytes`` signature is sent as those bytes (a header's raw octets)."""
    headers = {b"Content-Type": b"application/json; charset=utf-8"}
    if signature is not None:
        headers[b"Stripe-Signature"] = (
            signature if isinstance(signature, bytes) else signature.encode()
        )
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


@pytest.mark.parametrize(
    "signature",
    [
        lambda body: b"t=1,v1=\xe9",  # latin-1, as a raw header byte arrives
        lambda body: "t=1,v1=é".encode(),  # UTF-8
        lambda body: stripe_signature(body, WEBHOOK_SECRET).encode() + b"\xe9",
        lambda body: (
            stripe_signature(body, WEBHOOK_SECRET).replace(",", ",v1=\xff,").encode("latin-1")
        ),
    ],
    ids=["latin-1", "utf-8", "after a good digest", "before a good digest"],
)
async def test_a_signature_header_that_is_not_ascii_is_a_400_and_nothing_is_recorded(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis, signature: Any
) -> None:
    body = stripe_event("payment_intent.succeeded", PI)

    response = await post_event(client, body, signature(body))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "signature_invalid"
    assert await redis.keys("*") == []


def nested(depth: int) -> Any:
    value: Any = "pi_1"
    for _ in range(depth):
        value = {"a": value}
    return value


def deep_event(depth: int) -> bytes:
    """A payment_intent.succeeded event whose object's metadata is nested ``depth`` deep."""
    metadata = b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"id":"evt_1","object":"event","type":"payment_intent.succeeded",' + (
        b'"data":{"object":{"id":"pi_1","object":"payment_intent","metadata":%s}}}' % metadata
    )


def event_json(
    event_id: Any = "evt_1", event_type: Any = "payment_intent.succeeded", obj: Any = None
) -> bytes:
    """An event's body as json.dumps writes it (a lone surrogate as its \\u escape)."""
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "data": {"object": PI if obj is None else obj},
        }
    ).encode()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 5000 + b"]" * 5000, id="deep array"),
        pytest.param(deep_event(2000), id="deep object"),
        pytest.param(event_json(event_id="evt_\ud800"), id="surrogate in the id"),
        pytest.param(event_json(obj={**PI, "id": "pi_\udfff"}), id="surrogate in the object id"),
        pytest.param(event_json(obj={**PI, "description": "\ud800"}), id="surrogate elsewhere"),
        pytest.param(
            event_json(event_type="customer.\ud800", obj={"id": "cus_1"}),
            id="surrogate in an ignored type",
        ),
        pytest.param(event_json(obj={**PI, "id": "pi_\u0000"}), id="NUL in the object id"),
        pytest.param(
            event_json(obj={**PI, "id": "pi_1/../../v1/customers"}), id="a path in the object id"
        ),
        pytest.param(event_json(obj={**PI, "id": "pi_1\n"}), id="newline after the object id"),
        pytest.param(event_json(obj={**PI, "id": ""}), id="empty object id"),
        pytest.param(event_json(obj={**PI, "id": 123}), id="object id not a string"),
        pytest.param(event_json(event_id="evt_1 2"), id="space in the id"),
        pytest.param(event_json(event_id="evt_" + "a" * 252), id="id of 256 characters"),
        pytest.param(event_json(event_id=["evt_1"]), id="id not a string"),
        pytest.param(event_json(event_type="Payment_Intent.Succeeded"), id="upper-case type"),
        pytest.param(
            event_json(event_type="customer created", obj={"id": "cus_1"}),
            id="space in an ignored type",
        ),
        pytest.param(
            event_json(
                event_type="charge.dispute.created",
                obj={"id": "dp_1", "object": "dispute", "charge": "ch_1/x"},
            ),
            id="a path in a dispute's charge",
        ),
    ],
)
async def test_a_signed_body_that_is_not_an_event_of_stripes_shape_is_a_400_and_nothing_is_recorded(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis, body: bytes
) -> None:
    response = await post_event(client, body, stripe_signature(body, WEBHOOK_SECRET))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "event_invalid"
    assert await redis.keys("*") == []  # nothing queued, taken or counted


async def test_an_event_of_stripes_shape_is_taken_whatever_its_other_fields_hold(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    # An escaped surrogate pair (an emoji), text beyond ASCII, nesting as deep as Stripe's.
    obj = {**PI, "description": "Caf\u00e9 \ud83d\ude00 déjà", "metadata": nested(50)}
    body = event_json(event_id="evt_1NG8Du2eZvKYlo2C", obj={**obj, "id": "pi_" + "A1_" * 84})

    response = await post_event(client, body, stripe_signature(body, WEBHOOK_SECRET))

    assert response.status_code == 200
    (message,) = await queued(redis)
    assert message["headers"]["argsrepr"] == repr(
        ("evt_1NG8Du2eZvKYlo2C", "payment_intent.succeeded", "pi_" + "A1_" * 84, "")
    )


@pytest.mark.parametrize(
    ("event_type", "obj"),
    [
        # Stripe lets an account choose some objects' ids (a coupon's, a product's): never read.
        ("coupon.created", {"id": "SUMMER-25 %", "object": "coupon"}),
        # Some objects have no id at all: an endpoint subscribed to every event gets them, and
        # refusing them would make Stripe retry them for days and count the endpoint failing.
        ("balance.available", {"object": "balance", "available": []}),
    ],
)
async def test_an_ignored_event_about_an_object_the_account_named_is_answered(
    client: httpx.AsyncClient,
    redis: fakeredis.FakeAsyncRedis,
    event_type: str,
    obj: dict[str, object],
) -> None:
    body = stripe_event(event_type, obj)

    response = await post_event(client, body, stripe_signature(body, WEBHOOK_SECRET))

    assert response.status_code == 200
    assert response.json()["ignored"] is True
    assert (await redis.hgetall(WEBHOOK_COUNTS)) == {b"other|ignored": b"1"}


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
