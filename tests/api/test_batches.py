"""POST /payments/batch: each item answered as POST /payments would answer it, in order; the
answer's status the items' common one or 207; a replayed batch answers each item as a replay;
one round trip to Redis for the whole batch; each item one token of the client's rate."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import httpx
import pytest

from api.main import create_app
from shared.payments.payment_records import now_iso
from shared.settings.service_settings import Settings
from shared.store.keys import CLIENT_QUEUES, record_key
from tests.support import FakeListGateway, app_client, payment, queued_charges

BATCH = "/payments/batch"


def item(key: str, **overrides: Any) -> dict[str, Any]:
    return {"idempotency_key": key, **payment(**overrides)}


def batch(*items: dict[str, Any]) -> dict[str, Any]:
    return {"payments": list(items)}


def statuses(answer: httpx.Response) -> list[int]:
    return [result["status"] for result in answer.json()["results"]]


async def test_a_batch_of_good_payments_is_accepted_in_order(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    amounts = [f"{10 + i}.00" for i in range(5)]
    answer = await client.post(
        BATCH, json=batch(*(item(f"k{i}", amount=a) for i, a in enumerate(amounts)))
    )
    assert answer.status_code == 202
    results = answer.json()["results"]
    assert statuses(answer) == [202] * 5
    assert [r["payment"]["amount"] for r in results] == amounts
    assert [r["payment"]["idempotency_key"] for r in results] == [f"k{i}" for i in range(5)]
    assert all(r["payment"]["status"] == "queued" and "replayed" not in r for r in results)
    # Each new one says where it stands, as POST /payments' answer does.
    assert [r["payment"]["queue"]["ahead"] for r in results] == [0, 1, 2, 3, 4]
    # In the client's own queue (fair drain between clients), to be taken in the batch's order.
    assert await redis.smembers(CLIENT_QUEUES) == {b"payments.anonymous"}
    queued = [
        json.loads(m)["headers"]["id"] for m in await redis.lrange("payments.anonymous", 0, -1)
    ]
    assert queued[::-1] == [r["payment"]["id"] for r in results]  # LPUSH; workers pop the tail
    # Each is a payment of its own, as POST /payments made it.
    first = await client.get(f"/payments/{results[0]['payment']['id']}")
    assert first.json()["amount"] == "10.00"


async def test_a_batchs_payments_are_created_at_its_instant(client: httpx.AsyncClient) -> None:
    before = now_iso()
    answer = await client.post(BATCH, json=batch(*(item(f"t{i}") for i in range(30))))
    after = now_iso()
    stamps = {r["payment"]["created_at"] for r in answer.json()["results"]}
    stamps |= {r["payment"]["updated_at"] for r in answer.json()["results"]}
    assert len(stamps) == 1
    assert before <= stamps.pop() <= after


async def test_an_item_is_the_payment_post_payments_makes_with_its_key(
    client: httpx.AsyncClient,
) -> None:
    # Every optional field POST /payments takes: an item takes the same.
    body = payment(description="Order 7", metadata={"order_id": "7"}, currency="eur",
                   expires_in=600, capture_method="manual",
                   callback_url="https://shop.example.com/hooks")  # fmt: skip
    single = await client.post("/payments", json=body, headers={"Idempotency-Key": "same"})
    # The same key and body through a batch: the same payment, a replay.
    answer = await client.post(BATCH, json=batch({"idempotency_key": "same", **body}))
    assert answer.status_code == 202
    (result,) = answer.json()["results"]
    assert result["replayed"] is True
    # The same payment; where it stands in the queue is said on its first answer only.
    assert result["payment"] == {k: v for k, v in single.json().items() if k != "queue"}


async def test_bad_items_are_refused_alone_with_post_payments_errors(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    bad_bodies: list[Any] = [
        payment(amount=42.99),
        payment(amount="0.10"),
        payment(surprise="x"),
        {"amount": "1.00"},
        payment(metadata={"payment_id": "mine"}),
    ]
    items: list[Any] = [item("good-1"), *({"idempotency_key": f"bad-{i}", **b} for i, b in
                        enumerate(bad_bodies)), item("good-2"), "not an object",
                        payment(), {"idempotency_key": "x" * 256, **payment()}]  # fmt: skip
    answer = await client.post(BATCH, json=batch(*items))
    assert answer.status_code == 207
    results = answer.json()["results"]
    assert statuses(answer) == [202, 400, 400, 400, 400, 400, 202, 400, 400, 400]
    # Each error is the one POST /payments answers for that body.
    for result, body in zip(results[1:6], bad_bodies, strict=True):
        single = await client.post("/payments", json=body)
        assert single.status_code == 400
        assert result["error"] == single.json()["error"]
    assert results[7]["error"]["code"] == "invalid_json"
    assert results[8]["error"] == {
        "type": "invalid_request_error",
        "code": "parameter_missing",
        "message": "Missing required parameter: idempotency_key",
        "param": "idempotency_key",
    }
    assert results[9]["error"]["code"] == "idempotency_key_invalid"
    assert results[9]["error"]["param"] == "idempotency_key"
    assert len(await queued_charges(redis)) == 2


async def test_a_replayed_batch_answers_each_item_as_a_replay(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    body = batch(item("r1"), item("r2", amount="5.00"), item("r3", amount="7.00"))
    first = await client.post(BATCH, json=body)
    assert first.status_code == 202
    ids = [r["payment"]["id"] for r in first.json()["results"]]
    # A worker settles two of them meanwhile: one succeeded, one declined.
    await redis.hset(record_key(ids[0]), mapping={"status": "succeeded", "payment_intent": "pi_1"})
    error = {"type": "card_error", "code": "card_declined", "message": "Declined."}
    await redis.hset(
        record_key(ids[1]),
        mapping={"status": "failed", "error": json.dumps(error), "error_status": "402"},
    )
    again = await client.post(BATCH, json=body)
    assert again.status_code == 207
    results = again.json()["results"]
    assert statuses(again) == [200, 402, 202]
    assert all(r["replayed"] is True for r in results)
    assert results[0]["payment"]["confirmation"] == "pi_1"
    assert results[1]["error"] == {**error, "payment_id": ids[1]}
    assert results[2]["payment"]["id"] == ids[2]
    assert len(await queued_charges(redis)) == 3  # nothing enqueued again


async def test_a_key_reused_with_another_payment_is_a_422_for_that_item(
    client: httpx.AsyncClient,
) -> None:
    await client.post(BATCH, json=batch(item("used", amount="10.00")))
    answer = await client.post(
        BATCH,
        json=batch(item("used", amount="11.00"), item("fresh"), item("fresh", amount="9.00")),
    )
    assert answer.status_code == 207
    results = answer.json()["results"]
    # The third item reuses the second's key, within the batch: a 422 too, as in order.
    assert statuses(answer) == [422, 202, 422]
    assert results[0]["error"]["code"] == "idempotency_key_reused"
    assert results[0]["error"]["param"] == "idempotency_key"
    assert results[2]["error"]["payment_id"] == results[1]["payment"]["id"]


@pytest.mark.parametrize("number", [str(10**30), str(-(2**63) - 1), str(2**64), "1e400", "NaN"])
async def test_a_number_past_64_bits_or_a_double_gets_the_error_post_payments_gives(
    client: httpx.AsyncClient, number: str
) -> None:
    # Written by hand: a JSON encoder would not write 1e400 or NaN.
    fields = '"account_id": "cus_Abc123", "amount": "42.99", "expires_in": ' + number
    single = await client.post(
        "/payments",
        content="{" + fields + "}",
        headers={"Idempotency-Key": f"big-{number}", "Content-Type": "application/json"},
    )
    answer = await client.post(
        BATCH,
        content='{"payments": [{"idempotency_key": "big-' + number + '", ' + fields + "}]}",
        headers={"Content-Type": "application/json"},
    )
    assert single.status_code == 400
    assert answer.json()["results"] == [{"status": 400, **single.json()}]


async def test_a_body_nested_too_deep_is_refused_whole(client: httpx.AsyncClient) -> None:
    nested = '{"a": ' * 300 + '"1"' + "}" * 300
    answer = await client.post(
        BATCH,
        content='{"payments": [{"idempotency_key": "deep", "metadata": ' + nested + "}]}",
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_json"


async def test_every_item_refused_alike_gives_that_status(client: httpx.AsyncClient) -> None:
    answer = await client.post(BATCH, json=batch(item("a", amount="x"), item("b", amount="y")))
    assert answer.status_code == 400
    assert statuses(answer) == [400, 400]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"payments": [item(f"k{i}") for i in range(1001)]}, "batch_too_large"),
        ({"payments": []}, "payments_invalid"),
        ({"payments": item("one")}, "payments_invalid"),
        ({}, "parameter_missing"),
        ({"payments": [item("a")], "extra": 1}, "parameter_unknown"),
        ([item("a")], "invalid_json"),
    ],
)
async def test_a_batch_that_is_not_one_is_refused_whole(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis, body: Any, code: str
) -> None:
    answer = await client.post(BATCH, json=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == code
    assert "results" not in answer.json()
    assert await queued_charges(redis) == []


async def test_a_body_past_the_batch_limit_is_a_413_and_1000_items_fit(
    settings: Settings, redis: fakeredis.FakeAsyncRedis
) -> None:
    # Unlimited rate: the default budget (CLIENT_BURST) is under 1,000 items.
    app = create_app(settings.model_copy(update={"client_max_rps": 0}), redis=redis)
    meta = {"order_id": "o" * 40, "customer_ref": "c" * 40}
    full = batch(*(item(f"order-2026-{i:06d}", description="d" * 200, metadata=meta)
                   for i in range(1000)))  # fmt: skip
    big = {f"k{i}": "v" * 500 for i in range(3)}
    huge = batch(*(item(f"x{i}", description="d" * 1000, metadata=big) for i in range(1000)))
    assert len(json.dumps(huge)) > settings.max_batch_body_bytes
    async with app_client(app) as client:
        answer = await client.post(BATCH, json=full)
        assert answer.status_code == 202
        assert len(answer.json()["results"]) == 1000
        assert len(await queued_charges(redis)) == 1000
        too_big = await client.post(BATCH, json=huge)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "payload_too_large"
    assert len(await queued_charges(redis)) == 1000


async def test_a_batch_takes_no_idempotency_key_header_and_no_wait(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    keyed = await client.post(BATCH, json=batch(item("a")), headers={"Idempotency-Key": "b"})
    assert keyed.status_code == 400
    assert keyed.json()["error"]["code"] == "idempotency_key_unsupported"
    waiting = await client.post(BATCH + "?wait=5", json=batch(item("a")))
    assert waiting.status_code == 400
    assert waiting.json()["error"]["param"] == "wait"
    assert await queued_charges(redis) == []


@pytest.mark.parametrize(
    ("size", "writes", "calls"),
    [
        # One script call: one command, one round trip, for 100 items.
        (100, 1, 1),
        # Three script calls (no call holds Redis for more than 100 items), sent together: the
        # first at once (nothing else was on its way to Redis), the other two in the next
        # tick's pipeline, both writes in flight at the same time.
        (250, 2, 3),
    ],
)
async def test_a_batch_goes_to_redis_in_calls_of_100_items_sent_together(
    app: Any, client: httpx.AsyncClient, size: int, writes: int, calls: int
) -> None:
    group = app.state.service._store._redis.group
    before = (group.stats.batches + group.stats.direct, group.stats.calls)
    answer = await client.post(BATCH, json=batch(*(item(f"rt{i}") for i in range(size))))
    assert statuses(answer) == [202] * size
    after = (group.stats.batches + group.stats.direct, group.stats.calls)
    assert (after[0] - before[0], after[1] - before[1]) == (writes, calls)


async def test_without_the_group_commit_a_batch_is_one_script_call(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    settings = Settings(
        environment="test", redis_url="redis://fake", api_allow_anonymous=True,
        accept_group_commit=False,
    )  # fmt: skip
    async with app_client(create_app(settings, redis=redis)) as api:
        answer = await api.post(BATCH, json=batch(item("p1"), item("p2", amount="x")))
        assert statuses(answer) == [202, 400]
        again = await api.post(BATCH, json=batch(item("p1"), item("p3")))
        assert statuses(again) == [202, 202]
        assert again.json()["results"][0]["replayed"] is True
    assert len(await queued_charges(redis)) == 2


# --- the client's rate counts items ---------------------------------------------------------

TIGHT = "tight-key"


@pytest.fixture
async def tight() -> AsyncIterator[tuple[httpx.AsyncClient, fakeredis.FakeAsyncRedis]]:
    """A client with 5 tokens and nothing refilled while a test runs."""
    clients = [{"name": "tight", "keys": ["sha256:" + hashlib.sha256(TIGHT.encode()).hexdigest()],
                "scopes": ["payments"], "max_rps": 0.01, "burst": 5}]  # fmt: skip
    settings = Settings.model_validate(
        {"environment": "test", "redis_url": "redis://fake", "api_clients": json.dumps(clients)}
    )
    redis = fakeredis.FakeAsyncRedis()
    async with app_client(create_app(settings, redis=redis), gateway=FakeListGateway()) as api:
        api.headers["Authorization"] = f"Bearer {TIGHT}"
        yield api, redis


async def test_each_item_takes_a_token_and_those_past_the_rate_are_429s(
    tight: tuple[httpx.AsyncClient, fakeredis.FakeAsyncRedis],
) -> None:
    api, redis = tight
    items = [item("t0"), item("t1", amount="x"), item("t2"), item("t3"), item("t4"), item("t5"),
             item("t6", amount="x")]  # fmt: skip
    answer = await api.post(BATCH, json=batch(*items))
    assert answer.status_code == 207
    # Five tokens: the first five items, the invalid one too, as POST /payments counts it.
    assert statuses(answer) == [202, 400, 202, 202, 202, 429, 429]
    assert answer.json()["results"][5]["error"]["code"] == "rate_limited"
    assert answer.headers["ratelimit"].startswith('"client";r=0;')
    assert int(answer.headers["retry-after"]) > 0
    assert len(await queued_charges(redis)) == 4
    # Nothing left: every item of the next batch is a 429, and so is the answer.
    spent = await api.post(BATCH, json=batch(item("t7"), item("t8")))
    assert spent.status_code == 429
    assert statuses(spent) == [429, 429]
    assert "retry-after" in spent.headers
    assert len(await queued_charges(redis)) == 4


def test_the_document_says_an_error_status_is_an_error_or_every_items_results(app: Any) -> None:
    document = app.openapi()
    operation = document["paths"][BATCH]["post"]
    assert operation["operationId"] == "create_payment_batch"
    assert {"200", "202", "207", "400", "413", "422", "429", "503"} <= set(operation["responses"])
    answer = document["components"]["schemas"]["PaymentBatchAnswer"]
    assert {s["$ref"].rsplit("/", 1)[1] for s in answer["anyOf"]} == {
        "ErrorResponse",
        "PaymentBatchResponse",
    }
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["payments"]["maxItems"] == 1000
    assert "idempotency_key" in body["properties"]["payments"]["items"]["required"]


async def test_a_batch_redis_does_not_answer_is_a_503_for_the_whole_batch() -> None:
    server = fakeredis.FakeServer()
    settings = Settings(environment="test", redis_url="redis://fake", api_allow_anonymous=True)
    app = create_app(settings, redis=fakeredis.FakeAsyncRedis(server=server))
    async with app_client(app) as api:
        server.connected = False
        answer = await api.post(BATCH, json=batch(item("down-1"), item("down-2")))
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "redis_unavailable"
    assert "retry-after" in answer.headers
