"""POST /payments/{id}/refunds and GET ...: the refund request's contract, Redis faked."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import fakeredis
import httpx
import pytest

from shared.store.keys import EVENTS_CHANNEL, record_key, refund_key
from tests.support import QUEUE, payment


async def paid(client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis, **extra: str) -> str:
    """A payment a worker recorded as succeeded (the queue emptied again)."""
    response = await client.post("/payments", json=payment())
    payment_id: str = response.json()["id"]
    fields = {"status": "succeeded", "payment_intent": "pi_1", "charge": "ch_1", **extra}
    await redis.hset(record_key(payment_id), mapping=fields)  # type: ignore[arg-type]
    await redis.delete(QUEUE)
    return payment_id


async def refund(
    client: httpx.AsyncClient,
    payment_id: str,
    body: dict[str, Any] | None = None,
    key: str | None = None,
    wait: int = 0,
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return await client.post(
        f"/payments/{payment_id}/refunds?wait={wait}", json=body or {}, headers=headers
    )


async def test_a_refund_is_accepted_and_its_task_enqueued(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    payment_id = await paid(client, redis)

    response = await refund(client, payment_id, {"amount": "10.00"}, key="r-1")

    assert response.status_code == 202
    body = response.json()
    assert body["object"] == "refund"
    assert (body["status"], body["amount"], body["payment_id"]) == ("pending", "10.00", payment_id)
    assert body["id"].startswith("ref_")
    assert response.headers["location"] == f"/payments/{payment_id}/refunds/{body['id']}"
    (message,) = [json.loads(m) for m in await redis.lrange(QUEUE, 0, -1)]
    assert message["headers"]["task"] == "payments.refund"
    assert message["headers"]["id"] == body["id"]


async def test_no_amount_refunds_all_that_is_left(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    payment_id = await paid(client, redis)
    await refund(client, payment_id, {"amount": "40.00"})

    response = await refund(client, payment_id)

    assert response.json()["amount"] == "2.99"


async def test_the_same_key_replays_and_another_body_is_a_422(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    payment_id = await paid(client, redis)
    first = await refund(client, payment_id, {"amount": "10.00"}, key="r-1")
    again = await refund(client, payment_id, {"amount": "10.00"}, key="r-1")
    other = await refund(client, payment_id, {"amount": "11.00"}, key="r-1")

    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert await redis.llen(QUEUE) == 1


async def test_more_than_what_is_left_is_a_409(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    payment_id = await paid(client, redis)
    await refund(client, payment_id, {"amount": "40.00"})

    response = await refund(client, payment_id, {"amount": "3.00"})

    assert response.status_code == 409
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("refund_exceeds_charge", "amount")
    assert "2.99 usd is left" in error["message"]


async def test_a_payment_not_succeeded_is_not_refundable(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    queued = (await client.post("/payments", json=payment())).json()["id"]

    response = await refund(client, queued, {"amount": "1.00"})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "payment_not_refundable"


@pytest.mark.parametrize("amount", ["0.00", "1.234", "-1", "1e3", 10])
async def test_a_bad_amount_is_a_400(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis, amount: Any
) -> None:
    payment_id = await paid(client, redis)
    response = await refund(client, payment_id, {"amount": amount})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "amount"


async def test_an_unknown_payment_is_a_404(client: httpx.AsyncClient) -> None:
    response = await refund(client, "pay_" + "0" * 24, {"amount": "1.00"})
    assert response.status_code == 404


async def test_wait_answers_the_refund_once_a_worker_records_it_and_the_payment_lists_it(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    payment_id = await paid(client, redis)

    async def worker_refunds() -> None:
        while not await redis.llen(QUEUE):
            await asyncio.sleep(0.01)
        refund_id = json.loads((await redis.lrange(QUEUE, 0, -1))[0])["headers"]["id"]
        await redis.hset(
            refund_key(refund_id), mapping={"status": "succeeded", "stripe_refund": "re_1"}
        )
        await redis.hset(
            record_key(payment_id), mapping={"refunded_minor": "1000", "refund_reserved_minor": "0"}
        )
        await redis.publish(EVENTS_CHANNEL, refund_id)

    finisher = asyncio.create_task(worker_refunds())
    response = await refund(client, payment_id, {"amount": "10.00"}, wait=10)
    await finisher

    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"
    shown = (await client.get(f"/payments/{payment_id}")).json()
    assert shown["amount_refunded"] == "10.00"
    assert [(r["id"], r["status"]) for r in shown["refunds"]] == [
        (response.json()["id"], "succeeded")
    ]
    one = await client.get(f"/payments/{payment_id}/refunds/{response.json()['id']}")
    assert one.json()["stripe_refund"] == "re_1"
    missing = await client.get(f"/payments/{payment_id}/refunds/ref_{'0' * 24}")
    assert missing.status_code == 404
