"""POST /payments with capture_method manual, and POST /payments/{id}/capture: the request's
contract (what is refused, what is replayed), Redis faked."""

from __future__ import annotations

import json

import fakeredis
import httpx

from shared.store.keys import record_key
from tests.support import QUEUE, payment


async def authorized(client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis) -> str:
    """A manual-capture payment a worker recorded as authorized (the queue emptied again)."""
    response = await client.post("/payments", json=payment(capture_method="manual"))
    payment_id: str = response.json()["id"]
    fields = {"status": "requires_capture", "payment_intent": "pi_1", "charge": "ch_1"}
    await redis.hset(record_key(payment_id), mapping=fields)  # type: ignore[arg-type]
    await redis.delete(QUEUE)
    return payment_id


async def capture(
    client: httpx.AsyncClient, payment_id: str, amount: str | None = None
) -> httpx.Response:
    body = {} if amount is None else {"amount": amount}
    return await client.post(f"/payments/{payment_id}/capture", json=body)


async def test_an_authorization_is_asked_for_by_capture_method_manual(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/payments", json=payment(capture_method="manual"))

    assert response.status_code == 202
    assert response.json()["capture_method"] == "manual"
    assert "capture_method" not in (await client.post("/payments", json=payment())).json()


async def test_capture_method_is_part_of_the_request_s_identity(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "order-7"}
    first = await client.post("/payments", json=payment(capture_method="manual"), headers=headers)
    other = await client.post("/payments", json=payment(), headers=headers)
    same = await client.post("/payments", json=payment(capture_method="manual"), headers=headers)

    assert (first.status_code, other.status_code, same.status_code) == (202, 422, 202)
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert same.headers["idempotent-replayed"] == "true"


async def test_a_capture_is_queued_and_shown_pending(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    payment_id = await authorized(client, redis)

    response = await capture(client, payment_id, "30.00")

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "requires_capture"
    assert body["capture"] == {"action": "capture", "status": "pending", "amount": "30.00"}
    (message,) = [json.loads(m) for m in await redis.lrange(QUEUE, 0, -1)]
    assert message["headers"]["task"] == "payments.capture"
    polled = (await client.get(f"/payments/{payment_id}")).json()
    assert polled["capture"]["status"] == "pending"


async def test_a_capture_of_more_than_was_authorized_is_a_400(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    payment_id = await authorized(client, redis)

    response = await capture(client, payment_id, "43.00")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "amount_too_large"
    assert response.json()["error"]["param"] == "amount"
    assert await redis.llen(QUEUE) == 0


async def test_an_amount_that_is_not_a_decimal_string_is_a_400(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    payment_id = await authorized(client, redis)

    response = await client.post(f"/payments/{payment_id}/capture", json={"amount": 30})

    assert response.status_code == 400


async def test_a_capture_of_a_payment_that_is_no_authorization_is_a_409(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    queued = (await client.post("/payments", json=payment(capture_method="manual"))).json()
    charged = (await client.post("/payments", json=payment())).json()
    await redis.hset(record_key(charged["id"]), mapping={"status": "succeeded"})
    await redis.delete(QUEUE)

    for payment_id in (queued["id"], charged["id"]):
        # Whatever the amount: over the payment's is no authorization's to exceed.
        for body in ({}, {"amount": "9999.00"}):
            response = await capture(client, payment_id, **body)
            assert response.status_code == 409
            assert response.json()["error"]["code"] == "payment_not_capturable"
    assert await redis.llen(QUEUE) == 0


async def test_a_capture_asked_again_is_replayed_and_another_refused(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    payment_id = await authorized(client, redis)

    first = await capture(client, payment_id, "30.00")
    again = await capture(client, payment_id, "30.00")
    other = await capture(client, payment_id, "20.00")

    assert (first.status_code, again.status_code, other.status_code) == (202, 202, 409)
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert other.json()["error"]["code"] == "payment_not_capturable"
    assert await redis.llen(QUEUE) == 1  # one capture task, whatever was asked again


async def test_a_captures_idempotency_key_is_checked_and_answered_back(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    payment_id = await authorized(client, redis)
    path = f"/payments/{payment_id}/capture"

    refused = await client.post(path, json={}, headers={"Idempotency-Key": "k" * 300})
    first = await client.post(path, json={}, headers={"Idempotency-Key": "capture-1"})
    bare = await client.post(path, json={})

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "idempotency_key_invalid"
    assert first.status_code == 202
    assert first.headers["idempotency-key"] == "capture-1"
    assert bare.headers["idempotent-replayed"] == "true"  # the same capture, with or without
    assert await redis.llen(QUEUE) == 1


async def test_a_captured_payment_answers_200_and_a_released_one_shows_why(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    payment_id = await authorized(client, redis)
    await capture(client, payment_id)
    await redis.hset(record_key(payment_id), mapping={
        "status": "succeeded", "capture_status": "succeeded", "amount_captured_minor": "4299",
    })  # fmt: skip

    done = await capture(client, payment_id)

    assert done.status_code == 200
    assert (done.json()["status"], done.json()["amount_captured"]) == ("succeeded", "42.99")

    released = await authorized(client, redis)
    await capture(client, released)
    error = {"type": "invalid_request_error", "code": "authorization_released", "message": "x"}
    await redis.hset(record_key(released), mapping={
        "status": "canceled", "capture_status": "failed", "capture_error": json.dumps(error),
        "capture_error_status": "409",
    })  # fmt: skip
    shown = (await client.get(f"/payments/{released}")).json()
    assert shown["capture"]["error"]["code"] == "authorization_released"
    again = await capture(client, released)  # a failed capture may be followed by a new one
    assert again.status_code == 409
    assert "canceled" in again.json()["error"]["message"]


async def test_a_cancel_of_an_authorization_queues_its_void(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    payment_id = await authorized(client, redis)

    first = await client.post(f"/payments/{payment_id}/cancel")
    again = await client.post(f"/payments/{payment_id}/cancel")
    capture_instead = await capture(client, payment_id)

    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["capture"] == {"action": "void", "status": "pending"}
    assert first.json()["status"] == "requires_capture"
    assert again.headers["idempotent-replayed"] == "true"
    assert capture_instead.status_code == 409
    assert capture_instead.json()["error"]["code"] == "payment_not_capturable"
    (message,) = [json.loads(m) for m in await redis.lrange(QUEUE, 0, -1)]
    assert message["headers"]["task"] == "payments.capture"


async def test_a_cancel_while_a_capture_is_asked_is_a_409(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    payment_id = await authorized(client, redis)
    await capture(client, payment_id, "10.00")

    response = await client.post(f"/payments/{payment_id}/cancel")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "payment_not_capturable"
