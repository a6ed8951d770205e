"""POST /payments and POST /payments/batch are served ahead of FastAPI's router
(api.accept_asgi). A client must not be able to tell: every answer (status, body, headers) is the
one the router's route gives."""

from __future__ import annotations

import contextlib
from typing import Any

import fakeredis
import httpx
import orjson
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from api.main import create_app
from api.request_helpers import record_answer
from api.schemas import (
    CustomerPayments,
    QueueFigures,
    customer_payments_json,
    dump,
    payment_json,
    payment_view,
)
from shared.errors import RateLimited
from shared.payments.payment_records import PaymentRecord
from shared.payments.states import CHARGED_STATUSES, Status
from shared.settings.service_settings import Settings
from tests.support import app_client, payment

KEY = "fast_path_key_0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}

# (idempotency key or None, content type, body, query): each request of a scenario, in order.
Request = tuple[str | None, str, bytes | dict[str, Any], str]
SCENARIOS: dict[str, list[Request]] = {
    "accepted": [("k1", "application/json", payment(), "")],
    "replayed": [("k1", "application/json", payment(), "")] * 2,
    "other body, same key": [
        ("k1", "application/json", payment(), ""),
        ("k1", "application/json", payment(amount="1.00"), ""),
    ],
    "bad amount": [("k2", "application/json", payment(amount="4.2.1"), "")],
    "unknown field": [("k3", "application/json", payment(colour="red"), "")],
    "not JSON": [("k4", "application/json", b"{", "")],
    "not a JSON content type": [("k5", "text/plain", b"{}", "")],
    "too large": [("k6", "application/json", b"[" + b" " * 70_000 + b"]", "")],
    "bad wait": [("k7", "application/json", payment(), "wait=99")],
    "bad idempotency key": [("x" * 300, "application/json", payment(), "")],
    "no idempotency key": [(None, "application/json", payment(), "")],
    "metadata and description": [
        ("k8", "application/json", payment(metadata={"order_id": "1"}, description="Order"), "")
    ],
    "other metadata, same key": [
        ("k9", "application/json", payment(metadata={"order_id": "1"}), ""),
        ("k9", "application/json", payment(metadata={"order_id": "2"}), ""),
    ],
    "bad metadata": [("k10", "application/json", payment(metadata={"order_id": 1}), "")],
    "deadline": [("k12", "application/json", payment(expires_in=600), "")],
    "both deadlines": [
        ("k13", "application/json", payment(expires_in=600, expires_at="2030-01-01T00:00:00Z"), "")
    ],
    "reserved metadata key": [
        ("k11", "application/json", payment(metadata={"payment_id": "x"}), "")
    ],
}

# Differ by nature between any two requests (the tokens left move with the clock).
VARYING = {"x-request-id", "location", "idempotency-key", "ratelimit"}


def served(fast: bool) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
    """A client of an app with the fast path on or off. As a server answers: an unexpected
    error is the 500 the app rendered (Starlette raises it again afterwards, for the server to
    log), not an exception in the client."""
    settings = Settings(environment="test", redis_url="redis://fake", api_keys=KEY)
    app = create_app(settings, redis=fakeredis.FakeAsyncRedis(), fast_accept=fast)
    return app_client(app, raise_app_exceptions=False)


async def answers(fast: bool, requests: list[Request]) -> list[tuple[int, Any, dict[str, str]]]:
    got = []
    async with served(fast) as client:
        for key, content_type, body, query in requests:
            headers = {**AUTH, "Content-Type": content_type}
            if key is not None:
                headers["Idempotency-Key"] = key
            content = (
                body
                if isinstance(body, bytes)
                else httpx.Request("POST", "http://x", json=body).content
            )
            response = await client.post(f"/payments?{query}", content=content, headers=headers)
            data = response.json()
            if isinstance(data, dict):
                for volatile in ("id", "created_at", "updated_at", "idempotency_key"):
                    data.pop(volatile, None)
                if "error" in data:
                    data["error"].pop("payment_id", None)
                if "queue" in data:  # from the clock
                    data["queue"].pop("estimated_charge_at", None)
                data.pop("expires_at", None)
            kept = {k: v for k, v in response.headers.items() if k not in VARYING}
            got.append((response.status_code, data, kept))
    return got


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_the_fast_path_answers_as_the_router_does(scenario: str) -> None:
    requests = SCENARIOS[scenario]
    assert await answers(True, requests) == await answers(False, requests)


async def test_accepts_are_counted_under_the_route_template() -> None:
    settings = Settings(environment="test", redis_url="redis://fake", api_keys=KEY)
    app = create_app(settings, redis=fakeredis.FakeAsyncRedis())
    async with app_client(app) as client:
        for key in ("a", "b"):
            await client.post("/payments", json=payment(), headers={**AUTH, "Idempotency-Key": key})
        exposed = (await client.get("/metrics", headers=AUTH)).text
    assert 'payments_http_requests_total{method="POST",route="/payments",status="202"} 2.0' in (
        exposed
    )


async def test_an_unexpected_failure_is_a_500_error_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from api.service import PaymentService

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError

    monkeypatch.setattr(PaymentService, "claim", broken)
    settings = Settings(environment="test", redis_url="redis://fake", api_keys=KEY)
    app = create_app(settings, redis=fakeredis.FakeAsyncRedis())
    async with app_client(app) as client:
        response = await client.post("/payments", json=payment(), headers=AUTH)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert response.headers["x-request-id"]


def _batch(*items: object) -> bytes:
    return orjson.dumps({"payments": list(items)})


def _item(key: str, **fields: Any) -> dict[str, Any]:
    return {"idempotency_key": key, **payment(**fields)}


# (headers, body, query) of each POST /payments/batch of a scenario, in order.
BatchRequest = tuple[dict[str, str], bytes, str]
JSON_TYPE = {"Content-Type": "application/json"}
BATCH_SCENARIOS: dict[str, list[BatchRequest]] = {
    "accepted": [(JSON_TYPE, _batch(_item("b1"), _item("b2", metadata={"o": "1"})), "")],
    "replayed": [(JSON_TYPE, _batch(_item("b1"), _item("b2")), "")] * 2,
    "mixed": [
        (JSON_TYPE, _batch(_item("b1")), ""),
        (
            JSON_TYPE,
            _batch(
                _item("b1", amount="1.00"),
                _item("b3", amount="4.2.1"),
                {"account_id": "cus_1"},
                "x",
                _item("b4", colour="red"),
                _item("x" * 300),
                _item("b5", expires_in=600),
            ),
            "",
        ),
    ],
    "not JSON": [(JSON_TYPE, b"{", "")],
    "not an object": [(JSON_TYPE, b"[]", "")],
    "no payments": [(JSON_TYPE, b"{}", "")],
    "unknown member": [(JSON_TYPE, b'{"payments": [], "colour": 1}', "")],
    "empty": [(JSON_TYPE, _batch(), "")],
    "too many": [(JSON_TYPE, _batch(*[_item(f"m{i}") for i in range(1_001)]), "")],
    "not a JSON content type": [({"Content-Type": "text/plain"}, _batch(_item("b1")), "")],
    "an Idempotency-Key": [({**JSON_TYPE, "Idempotency-Key": "k"}, _batch(_item("b1")), "")],
    "wait": [(JSON_TYPE, _batch(_item("b1")), "wait=5")],
    "too large": [(JSON_TYPE, b" " * (2 * 1024 * 1024 + 1), "")],
}


async def batch_answers(
    fast: bool, requests: list[BatchRequest]
) -> list[tuple[int, Any, dict[str, str]]]:
    got = []
    async with served(fast) as client:
        for headers, body, query in requests:
            response = await client.post(
                f"/payments/batch?{query}", content=body, headers={**AUTH, **headers}
            )
            data = response.json()
            for result in data.get("results", ()):
                for volatile in ("id", "created_at", "updated_at", "expires_at"):
                    result.get("payment", {}).pop(volatile, None)
                result.get("payment", {}).get("queue", {}).pop("estimated_charge_at", None)
                result.get("error", {}).pop("payment_id", None)
            kept = {k: v for k, v in response.headers.items() if k not in VARYING}
            got.append((response.status_code, data, kept))
    return got


@pytest.mark.parametrize("scenario", sorted(BATCH_SCENARIOS))
async def test_the_fast_path_answers_a_batch_as_the_router_does(scenario: str) -> None:
    requests = BATCH_SCENARIOS[scenario]
    fast = await batch_answers(True, requests)
    assert fast == await batch_answers(False, requests)
    assert all(status != 500 for status, _, _ in fast)


async def test_batches_are_counted_under_the_route_template() -> None:
    settings = Settings(environment="test", redis_url="redis://fake", api_keys=KEY)
    app = create_app(settings, redis=fakeredis.FakeAsyncRedis())
    async with app_client(app) as client:
        for key in ("a", "b"):
            body = _batch(_item(key))
            await client.post("/payments/batch", content=body, headers={**AUTH, **JSON_TYPE})
        exposed = (await client.get("/metrics", headers=AUTH)).text
    assert (
        'payments_http_requests_total{method="POST",route="/payments/batch",status="202"} 2.0'
        in exposed
    )


@pytest.mark.parametrize(
    "error",
    [RedisConnectionError("connection refused"), ZeroDivisionError(), RateLimited()],
    ids=["redis down", "unexpected", "service error"],
)
async def test_an_error_answers_as_the_router_does(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    from api.service import PaymentService

    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(PaymentService, "claim", failing)
    monkeypatch.setattr(PaymentService, "claim_many", failing)
    request: Request = ("k1", "application/json", payment(), "")
    fast, routed = await answers(True, [request]), await answers(False, [request])
    assert fast == routed
    assert fast[0][0] in (429, 500, 503)
    batch: BatchRequest = (JSON_TYPE, _batch(_item("b1")), "")
    fast, routed = await batch_answers(True, [batch]), await batch_answers(False, [batch])
    assert fast == routed
    assert fast[0][0] in (429, 500, 503)


def _records() -> list[PaymentRecord]:
    base: dict[str, Any] = dict(
        id="pay_" + "a" * 24,
        account_id="cus_Abc123",
        idempotency_key="k1",
        key_fingerprint="f",
        created_at="2026-11-28T00:00:00.000Z",
        updated_at="2026-11-28T00:00:01.000Z",
        client="shop",
    )
    records = []
    for status in Status:
        for currency, minor in (("usd", 4299), ("jpy", 500)):
            records.append(
                PaymentRecord(status=status, amount_minor=minor, currency=currency, **base)
            )
            records.append(
                PaymentRecord(
                    status=status,
                    amount_minor=minor,
                    currency=currency,
                    payment_method="pm_card_visa",
                    payment_intent="pi_123",
                    charge="ch_123",
                    next_action="use_stripe_sdk",
                    client_secret="pi_123_secret_456",
                    refunded_minor=100,
                    stripe_refunded_minor=150,
                    error={"type": "card_error", "code": "card_declined", "message": "No."},
                    **base,
                )
            )
            records.append(
                PaymentRecord(
                    status=status,
                    amount_minor=minor,
                    currency=currency,
                    next_action="use_stripe_sdk",
                    client_secret="pi_123_secret_456",
                    **base,
                )
            )
            records.append(
                PaymentRecord(
                    status=status,
                    amount_minor=minor,
                    currency=currency,
                    description='Order "1001" \u00e9\n',
                    metadata={"order_id": "1001", "note": "\u00fc\u2028<>&"},
                    **base,
                )
            )
    return records


@pytest.mark.parametrize("viewer", [None, "shop", "other"])
def test_the_direct_payment_json_is_the_models_to_the_byte(viewer: str | None) -> None:
    standings = [None, QueueFigures(0, None), QueueFigures(7, "2026-11-28T00:00:05.000Z")]
    for record in _records():
        for queue in standings:
            assert (
                payment_json(record, viewer=viewer, queue=queue)
                == dump(payment_view(record, viewer=viewer, queue=queue)).encode()
            ), (record, queue)


def test_the_direct_customer_payments_json_is_the_models_to_the_byte() -> None:
    from shared.stripe.objects import ChargePage, charge_summary

    charges: list[dict[str, Any]] = [
        {"id": "ch_1", "amount": 4299, "currency": "usd", "status": "succeeded",
         "created": 1_800_000_000, "payment_intent": {"id": "pi_1", "metadata":
         {"payment_id": "pay_" + "b" * 24}}, "description": None, "failure_code": None,
         "refunded": False, "amount_refunded": 1000, "metadata": {}},
        {"id": "ch_2", "amount": 500, "currency": "jpy", "status": "failed", "created": 1,
         "payment_intent": "pi_2", "description": "Order 7", "failure_code": "card_declined",
         "refunded": True, "amount_refunded": 500, "metadata": {"payment_id": "pay_x"}},
        {"id": "ch_3", "amount": 50, "currency": "eur", "status": "pending", "created": 2,
         "payment_intent": None},
        {"id": "ch_4", "amount": 50, "currency": "eur", "status": "succeeded", "created": 3,
         "payment_intent": {"id": "pi_4", "description": "Order \u00e9", "metadata":
         {"payment_id": "pay_y", "client": "shop", "order_id": "1001", "note": "\u2028"}}},
    ]  # fmt: skip
    for has_more in (True, False):
        for data in ([], charges[:1], charges):
            page = ChargePage(data=[charge_summary(c) for c in data], has_more=has_more)
            model = CustomerPayments.model_validate(
                {"object": "list", "data": page.data, "has_more": has_more,
                 "next_cursor": page.next_cursor},
                from_attributes=True,
            )  # fmt: skip
            assert customer_payments_json(page) == dump(model).encode()


def _answer_as_written(record: PaymentRecord, queue: QueueFigures | None) -> Any:
    """record_answer's rule as it reads: charged (or final without an error), final with an
    error, else in progress (the queue only while queued)."""
    if record.status in CHARGED_STATUSES or (record.is_final and record.error is None):
        return 200, "payment", payment_json(record)
    if record.is_final and record.error is not None:
        return (
            record.error_status or 402,
            "error",
            orjson.dumps({**record.error, "payment_id": record.id}),
        )
    return (
        202,
        "payment",
        payment_json(record, queue=queue if record.status is Status.QUEUED else None),
    )


def test_every_records_answer_follows_the_rule() -> None:
    queue = QueueFigures(ahead=3, estimated_charge_at="2026-11-28T00:00:05.000Z")
    for record in _records():
        for standing in (None, queue):
            assert record_answer(record, standing) == _answer_as_written(record, standing)
