"""A payment's deadline (expires_at / expires_in), POST /payments/{id}/cancel, and where a
queued payment stands (``queue``), through the real app with Redis faked."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import fakeredis
import httpx
import pytest

from api.queue_position import QueueEstimates
from shared.payments import deadlines
from shared.payments.payment_records import PaymentRecord, new_record_fields
from shared.payments.states import Status
from shared.settings.service_settings import Settings
from shared.store.keys import DEADLINES, lock_key, record_key
from tests.api.conftest import ClientFor
from tests.support import RFC3339_ACCEPTED, RFC3339_NOW, RFC3339_REFUSED, payment


def _iso(seconds_from_now: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds_from_now)).isoformat()


async def _accept(client: httpx.AsyncClient, key: str, **body: object) -> httpx.Response:
    return await client.post("/payments", json=payment(**body), headers={"Idempotency-Key": key})


async def _accept_in_a_batch(client: httpx.AsyncClient, key: str, **body: object) -> Any:
    """The result of a batch of one item, ``payment(**body)`` with ``key``."""
    items = [{"idempotency_key": key, **payment(**body)}]
    answer = await client.post("/payments/batch", json={"payments": items})
    return answer.json()["results"][0]


# --- deadlines --------------------------------------------------------------------------------


async def test_expires_in_sets_a_deadline_shown_in_the_answer_and_filed_for_expiry(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    before = time.time()
    accepted = await _accept(client, "d-1", expires_in=600)
    assert accepted.status_code == 202
    body = accepted.json()
    deadline = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00")).timestamp()
    assert before + 600 <= deadline + 0.001 <= time.time() + 600.01
    assert await redis.zscore(DEADLINES, body["id"]) == pytest.approx(deadline * 1000, abs=1)
    polled = (await client.get(f"/payments/{body['id']}")).json()
    assert polled["expires_at"] == body["expires_at"]


async def test_expires_at_is_kept_as_given(client: httpx.AsyncClient) -> None:
    accepted = await _accept(client, "d-2", expires_at="2099-01-01T00:00:00+00:00")
    assert accepted.status_code == 400  # more than a day ahead
    at = _iso(3600)
    accepted = await _accept(client, "d-3", expires_at=at)
    assert accepted.status_code == 202
    shown = datetime.fromisoformat(accepted.json()["expires_at"].replace("Z", "+00:00"))
    assert abs(shown - datetime.fromisoformat(at)) < timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"expires_in": 0}, "expires_in", "expires_in_invalid"),
        ({"expires_in": 86_401}, "expires_in", "expires_in_invalid"),
        ({"expires_in": "60"}, "expires_in", "expires_in_invalid"),
        ({"expires_at": "tomorrow"}, "expires_at", "expires_at_invalid"),
        ({"expires_at": "2030-01-01T00:00:00"}, "expires_at", "expires_at_invalid"),  # no offset
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at", "expires_at_invalid"),  # past
        ({"expires_at": 1_900_000_000}, "expires_at", "expires_at_invalid"),
        ({"expires_in": 60, "expires_at": "2030-01-01T00:00:00Z"}, "expires_in",
         "parameters_exclusive"),
    ],
)  # fmt: skip
async def test_a_bad_deadline_is_a_400_naming_its_field(
    client: httpx.AsyncClient, body: dict[str, object], param: str, code: str
) -> None:
    refused = await _accept(client, f"bad-{param}-{code}-{body!s}", **body)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["param"], error["code"]) == (param, code)


@pytest.fixture
def rfc3339_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deadlines read against RFC3339_NOW, which puts RFC3339_ACCEPTED less than a day ahead."""
    monkeypatch.setattr(deadlines, "time", SimpleNamespace(time=lambda: RFC3339_NOW))


@pytest.mark.usefixtures("rfc3339_clock")
@pytest.mark.parametrize(("given", "shown"), RFC3339_ACCEPTED)
async def test_expires_at_takes_rfc_3339_date_times_single_or_in_a_batch(
    client: httpx.AsyncClient, given: str, shown: str
) -> None:
    single = await _accept(client, f"rfc-{given!a}", expires_at=given)
    assert single.status_code == 202, single.text
    assert single.json()["expires_at"] == shown
    batch = await _accept_in_a_batch(client, f"rfc-b-{given!a}", expires_at=given)
    assert batch["payment"]["expires_at"] == shown


@pytest.mark.usefixtures("rfc3339_clock")
@pytest.mark.parametrize("given", RFC3339_REFUSED)
async def test_expires_at_refuses_what_is_not_rfc_3339_single_or_in_a_batch(
    client: httpx.AsyncClient, given: str
) -> None:
    single = await _accept(client, f"rfc-{given!a}", expires_at=given)
    assert single.status_code == 400
    assert single.json()["error"] == {
        "type": "invalid_request_error",
        "code": "expires_at_invalid",
        "message": "expires_at must be an RFC 3339 date-time with its offset, such as "
        "2026-01-01T12:00:00Z.",
        "param": "expires_at",
    }
    batch = await _accept_in_a_batch(client, f"rfc-b-{given!a}", expires_at=given)
    assert batch == {"status": 400, **single.json()}


async def test_the_deadline_is_part_of_the_request(client: httpx.AsyncClient) -> None:
    first = await _accept(client, "d-4", expires_in=600)
    # The same request later: the same payment, with its first deadline.
    again = await _accept(client, "d-4", expires_in=600)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["expires_at"] == first.json()["expires_at"]
    for other in ({"expires_in": 601}, {}, {"expires_at": _iso(600)}):
        refused = await _accept(client, "d-4", **other)
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "idempotency_key_reused"
    # A payment without a deadline keeps the identity it always had.
    await _accept(client, "d-5")
    assert (await _accept(client, "d-5", expires_in=60)).status_code == 422


async def test_an_expired_payment_reads_as_not_charged(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    accepted = (await _accept(client, "d-6", expires_in=60)).json()
    error = {"type": "invalid_request_error", "code": "payment_expired",
             "message": "never sent to Stripe"}  # fmt: skip
    await redis.hset(record_key(accepted["id"]), mapping={
        "status": "expired", "error": json.dumps(error), "error_status": "409"})  # fmt: skip
    polled = await client.get(f"/payments/{accepted['id']}")
    assert polled.status_code == 200
    assert polled.json()["status"] == "expired"
    assert polled.json()["error"]["code"] == "payment_expired"
    assert "queue" not in polled.json()
    replay = await _accept(client, "d-6", expires_in=60)
    assert replay.status_code == 409
    assert replay.json()["error"]["code"] == "payment_expired"


# --- cancel -----------------------------------------------------------------------------------


async def test_a_queued_payment_is_canceled_once_and_for_good(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    accepted = (await _accept(client, "c-1", expires_in=600)).json()
    canceled = await client.post(f"/payments/{accepted['id']}/cancel")
    assert canceled.status_code == 200
    body = canceled.json()
    assert body["status"] == "canceled"
    assert body["error"]["code"] == "payment_canceled"
    assert "never sent to Stripe" in body["error"]["message"]
    # Idempotent: asked again, the same answer.
    again = await client.post(f"/payments/{accepted['id']}/cancel")
    assert again.status_code == 200
    assert again.json()["status"] == "canceled"
    assert (await client.get(f"/payments/{accepted['id']}")).json()["status"] == "canceled"
    assert await redis.zscore(DEADLINES, accepted["id"]) is None
    # Replaying its request answers what became of it.
    replay = await _accept(client, "c-1", expires_in=600)
    assert replay.status_code == 409
    assert replay.json()["error"]["code"] == "payment_canceled"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (Status.PROCESSING, "payment_in_progress"),
        (Status.UNKNOWN, "payment_in_progress"),
        (Status.SUCCEEDED, "payment_not_cancelable"),
        (Status.FAILED, "payment_not_cancelable"),
        # Sent, and waiting for the customer's 3-D Secure: it may still be charged.
        (Status.REQUIRES_ACTION, "payment_in_progress"),
        (Status.EXPIRED, "payment_not_cancelable"),
    ],
)
async def test_a_payment_already_sent_or_final_is_not_canceled(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis, status: Status, code: str
) -> None:
    accepted = (await _accept(client, f"c-{status.value}")).json()
    await redis.hset(record_key(accepted["id"]), "status", status.value)
    refused = await client.post(f"/payments/{accepted['id']}/cancel")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == code
    assert refused.json()["error"]["payment_id"] == accepted["id"]
    if code == "payment_not_cancelable":
        assert status.value in refused.json()["error"]["message"]
    else:
        assert "can no longer be canceled" in refused.json()["error"]["message"]
    assert (await redis.hget(record_key(accepted["id"]), "status")).decode() == status.value  # type: ignore[union-attr]


async def test_a_queued_payment_a_worker_holds_is_in_progress(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    accepted = (await _accept(client, "c-held")).json()
    await redis.set(lock_key(accepted["id"]), "a-worker")
    refused = await client.post(f"/payments/{accepted['id']}/cancel")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "payment_in_progress"


async def test_cancel_of_no_such_payment_is_a_404(client: httpx.AsyncClient) -> None:
    for payment_id in ("pay_" + "0" * 24, "nope"):
        missing = await client.post(f"/payments/{payment_id}/cancel")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "payment_not_found"


async def test_a_client_cannot_cancel_another_clients_payment(client_for: ClientFor) -> None:
    clients = [{"name": "shop", "keys": ["shop-key"]}, {"name": "other", "keys": ["other-key"]}]
    settings = Settings.model_validate({"environment": "test", "redis_url": "redis://fake",
                                        "api_clients": json.dumps(clients)})  # fmt: skip
    async with client_for(settings, redis=fakeredis.FakeAsyncRedis()) as api:
        accepted = await api.post("/payments", json=payment(), headers={
            "Authorization": "Bearer shop-key", "Idempotency-Key": "c-x"})  # fmt: skip
        path = f"/payments/{accepted.json()['id']}/cancel"
        refused = await api.post(path, headers={"Authorization": "Bearer other-key"})
        assert refused.status_code == 404
        mine = await api.post(path, headers={"Authorization": "Bearer shop-key"})
        assert mine.json()["status"] == "canceled"


# --- where a queued payment stands --------------------------------------------------------------


async def test_the_accept_and_get_say_how_many_wait_before_a_payment(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    ids = []
    for i in range(4):
        answer = (await _accept(client, f"q-{i}")).json()
        assert answer["queue"]["ahead"] == i
        assert answer["queue"]["estimate"] is True
        ids.append(answer["id"])
    # More accepted after the third: still two before it.
    third = (await client.get(f"/payments/{ids[2]}")).json()
    assert third["queue"]["ahead"] == 2
    # A worker takes the oldest two: nothing before the third any more.
    (queue,) = [q.decode() for q in await redis.smembers("payments:queues")]  # type: ignore[union-attr]
    await redis.rpop(queue, 2)
    third = (await client.get(f"/payments/{ids[2]}")).json()
    assert third["queue"]["ahead"] == 0
    assert (await client.get(f"/payments/{ids[3]}")).json()["queue"]["ahead"] == 1


async def test_the_estimated_charge_time_follows_the_drain_rate(
    client_for: ClientFor, redis: fakeredis.FakeAsyncRedis
) -> None:
    settings = Settings(environment="test", redis_url="redis://fake",
                        api_allow_anonymous=True, stripe_max_rps=2)  # fmt: skip
    async with client_for(settings, redis=redis) as api:
        before = time.time()
        answer = await api.post("/payments", json=payment(payment_method="pm_card_visa"),
                                headers={"Idempotency-Key": "e-1"})  # fmt: skip
        queue = answer.json()["queue"]
        # No drain observed yet: the Stripe budget, 2 charges a second, one call each.
        at = datetime.fromisoformat(queue["estimated_charge_at"].replace("Z", "+00:00"))
        assert before + 0.5 <= at.timestamp() + 0.001 <= time.time() + 0.51


async def test_only_a_queued_payment_says_where_it_stands(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    accepted = (await _accept(client, "q-done")).json()
    await redis.hset(record_key(accepted["id"]), "status", "processing")
    assert "queue" not in (await client.get(f"/payments/{accepted['id']}")).json()


def test_the_drain_rate_is_what_left_the_clients_queue_lately() -> None:
    now = [1000.0]
    cap_10 = Settings(environment="test", stripe_max_rps=10).stripe_limits
    estimates = QueueEstimates(cap_10, clock=lambda: now[0])
    assert estimates.drain_rate("shop", calls_per_charge=2) == 5  # the budget, two calls each
    estimates.observe("shop", accepted=100, waiting=100)
    now[0] += 4
    estimates.observe("shop", accepted=120, waiting=108)  # 12 taken in 4 s
    assert estimates.drain_rate("shop") == 3
    # Past the window, old samples no longer count.
    now[0] += 120
    estimates.observe("shop", accepted=120, waiting=108)
    assert estimates.drain_rate("shop") == 10
    off = Settings(environment="test", stripe_max_rps=0).stripe_limits
    assert QueueEstimates(off).drain_rate("shop") is None


def test_a_drain_rate_leaves_out_the_time_the_queue_stood_empty() -> None:
    """A backlog drained at 10/s, the queue idle for 40 s, then a new backlog draining at 10/s
    again: the rate is 10/s, not what 60 s that were mostly idle would average to."""
    now = [1000.0]
    estimates = QueueEstimates(Settings(environment="test").stripe_limits, clock=lambda: now[0])
    estimates.observe("shop", accepted=50, waiting=50)
    now[0] += 5
    estimates.observe("shop", accepted=50, waiting=0)  # all 50 taken in 5 s
    now[0] += 40  # idle: nothing accepted, nothing to take
    estimates.observe("shop", accepted=150, waiting=100)  # a new burst
    now[0] += 3
    estimates.observe("shop", accepted=150, waiting=70)  # 30 taken in 3 s
    assert estimates.drain_rate("shop") == 10
    # Had the gap counted: (100 - 0) / 48 s, about 2/s, an estimate five times too late.


@pytest.mark.parametrize("history", ["none", "recent", "old", "draining"])
@pytest.mark.parametrize("stripe_max_rps", [0, 10])
def test_a_batchs_estimates_are_each_payments_own_at_the_batchs_instant(
    history: str, stripe_max_rps: int
) -> None:
    """AcceptEstimates (a batch's, its shared part once) answers each new payment as
    QueueEstimates.at_accept does, payment by payment, at the same instant."""
    limits = Settings(environment="test", stripe_max_rps=stripe_max_rps).stripe_limits
    now = [1000.0]
    one_by_one = QueueEstimates(limits, clock=lambda: now[0])
    batched = QueueEstimates(limits, clock=lambda: now[0])
    for estimates in (one_by_one, batched):
        if history == "recent":
            estimates.observe("shop", accepted=50, waiting=40, now=999.8)
        elif history == "old":
            estimates.observe("shop", accepted=50, waiting=40, now=990.0)
        elif history == "draining":
            estimates.observe("shop", accepted=50, waiting=40, now=994.0)
            estimates.observe("shop", accepted=60, waiting=30, now=997.0)
    records = [
        PaymentRecord.from_redis(
            {**new_record_fields(payment_id=f"pay_{i:024x}", account_id="cus_1", amount_minor=100,
                                 currency="usd", payment_method="pm_1" if i % 3 else None,
                                 idempotency_key=f"k{i}", fingerprint="f",
                                 client="other" if i == 4 else "shop"),
             "queue_seq": str(61 + i)}
        )
        for i in range(8)
    ]  # fmt: skip
    figures = [(record, 20 + i, record.queue_seq or 0) for i, record in enumerate(records)]
    figures.append((records[0], -3, 0))  # not observed, nothing ahead
    expected = [one_by_one.at_accept(r, ahead=ahead, seq=seq) for r, ahead, seq in figures]
    batch = batched.accepts()
    assert [batch.at_accept(r, ahead=ahead, seq=seq) for r, ahead, seq in figures] == expected
    assert batched._samples == one_by_one._samples


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (None, {}),  # no body at all
        (b"", {"Content-Type": "application/x-www-form-urlencoded"}),  # curl -d ''
        (b"{}", {"Content-Type": "application/json"}),
    ],
)
async def test_a_cancel_takes_no_body_or_an_empty_one(
    client: httpx.AsyncClient, content: bytes | None, headers: dict[str, str]
) -> None:
    accepted = (await _accept(client, f"c-body-{content!r}")).json()
    canceled = await client.post(
        f"/payments/{accepted['id']}/cancel", content=content, headers=headers
    )
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"


async def test_a_cancel_with_a_field_is_refused_and_cancels_nothing(
    client: httpx.AsyncClient,
) -> None:
    accepted = (await _accept(client, "c-reason")).json()
    refused = await client.post(
        f"/payments/{accepted['id']}/cancel", json={"cancellation_reason": "duplicate"}
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "parameter_unknown"
    assert refused.json()["error"]["param"] == "cancellation_reason"
    assert (await client.get(f"/payments/{accepted['id']}")).json()["status"] == "queued"


async def test_a_cancels_idempotency_key_is_checked_and_answered_back(
    client: httpx.AsyncClient,
) -> None:
    accepted = (await _accept(client, "c-key")).json()
    path = f"/payments/{accepted['id']}/cancel"
    refused = await client.post(path, headers={"Idempotency-Key": "k" * 300})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "idempotency_key_invalid"
    assert (await client.get(f"/payments/{accepted['id']}")).json()["status"] == "queued"
    canceled = await client.post(path, headers={"Idempotency-Key": "cancel-1"})
    assert canceled.status_code == 200
    assert canceled.headers["idempotency-key"] == "cancel-1"
    # Idempotent by what it asks: another key, the same cancel.
    again = await client.post(path, headers={"Idempotency-Key": "cancel-2"})
    assert again.json()["status"] == "canceled"
    assert again.headers["idempotency-key"] == "cancel-2"
