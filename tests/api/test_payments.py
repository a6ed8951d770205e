from __future__ import annotations

import asyncio
import base64
import json
import re
from typing import Any

import fakeredis
import httpx
import pytest
from fastapi import FastAPI

from shared.errors import CustomerNotFound, StripeUnavailable
from shared.payments.states import Status
from shared.settings.service_settings import Settings
from shared.store.keys import record_key
from shared.stripe.objects import ChargePage, ChargeSummary
from tests.support import FakeListGateway, fake_worker_records, payment, queued_charges


async def queued_messages(redis: fakeredis.FakeAsyncRedis) -> list[dict[str, Any]]:
    return [json.loads(m) for m in await queued_charges(redis)]


async def test_accepts_a_payment_and_enqueues_its_charge(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    response = await client.post("/payments", json=payment())

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["amount"] == "42.99"
    assert body["currency"] == "usd"
    assert body["account_id"] == "cus_Abc123"
    assert body["idempotency_key"].startswith("auto_")
    assert response.headers["location"] == f"/payments/{body['id']}"
    assert response.headers["idempotency-key"] == body["idempotency_key"]

    (message,) = await queued_messages(redis)
    assert message["headers"]["task"] == "payments.charge"
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert args == [body["id"]]  # only the id travels: no card data, no amount
    assert kwargs == {}

    polled = await client.get(body["location"] if "location" in body else f"/payments/{body['id']}")
    assert polled.status_code == 200
    assert polled.json()["status"] == "queued"


async def test_zero_decimal_currency_is_shown_in_its_own_units(client: httpx.AsyncClient) -> None:
    response = await client.post("/payments", json=payment(amount="500", currency="jpy"))
    assert response.status_code == 202
    assert response.json()["amount"] == "500"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (payment(amount=42.99), "amount", "amount_invalid"),
        (payment(amount=42), "amount", "amount_invalid"),
        (payment(amount=True), "amount", "amount_invalid"),
        (payment(amount=None), "amount", "amount_invalid"),
        (payment(amount=["42.99"]), "amount", "amount_invalid"),
        (payment(amount="42.999"), "amount", "amount_invalid"),
        (payment(amount="0.49"), "amount", "amount_invalid"),
        (payment(amount="1000000.00"), "amount", "amount_invalid"),
        (payment(amount="1e3"), "amount", "amount_invalid"),
        (payment(amount="NaN"), "amount", "amount_invalid"),
        (payment(amount="Infinity"), "amount", "amount_invalid"),
        (payment(amount="1,000.00"), "amount", "amount_invalid"),
        (payment(amount=" 42.99"), "amount", "amount_invalid"),
        (payment(amount="-42.99"), "amount", "amount_invalid"),
        (payment(amount="500.5", currency="jpy"), "amount", "amount_invalid"),
        (payment(account_id="acct_123"), "account_id", "account_id_invalid"),
        (payment(account_id="cus_"), "account_id", "account_id_invalid"),
        (payment(account_id="cus_" + "a" * 65), "account_id", "account_id_invalid"),
        (payment(account_id="cus_abc def"), "account_id", "account_id_invalid"),
        (payment(account_id=123), "account_id", "account_id_invalid"),
        (payment(currency="USD"), "currency", "currency_invalid"),
        (payment(currency="xyz"), "currency", "currency_invalid"),
        (payment(payment_method="tok_visa"), "payment_method", "payment_method_invalid"),
        (payment(extra="x"), "extra", "parameter_unknown"),
        ({"amount": "42.99"}, "account_id", "parameter_missing"),
        ({"account_id": "cus_Abc123"}, "amount", "parameter_missing"),
    ],
)
async def test_refuses_bad_input_with_a_400_naming_the_field(
    client: httpx.AsyncClient,
    redis: fakeredis.FakeAsyncRedis,
    body: dict[str, Any],
    param: str,
    code: str,
) -> None:
    response = await client.post("/payments", json=body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["code"] == code
    assert error["message"]
    assert await queued_messages(redis) == []


@pytest.mark.parametrize(
    "raw",
    [b"{", b"[]", b'"x"', b"null", b"\xff\xfe", b"[" * 5000 + b"]" * 5000],
)
async def test_malformed_json_is_a_400_not_a_500(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post(
        "/payments", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_that_is_not_json_is_a_415(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post(
        "/payments", content=json.dumps(payment()).encode(), headers=headers
    )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


async def test_a_body_over_64_kib_is_a_413(client: httpx.AsyncClient) -> None:
    big = json.dumps(payment(padding="x" * 70_000)).encode()
    response = await client.post(
        "/payments", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_a_streamed_body_without_length_is_cut_at_the_limit(
    client: httpx.AsyncClient,
) -> None:
    async def chunks() -> Any:
        for _ in range(100):
            yield b" " * 10_000

    response = await client.post(
        "/payments", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_same_key_and_body_replays_the_same_payment(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    headers = {"Idempotency-Key": "order-1001"}
    first = await client.post("/payments", json=payment(), headers=headers)
    second = await client.post("/payments", json=payment(), headers=headers)

    assert first.status_code == second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(await queued_messages(redis)) == 1  # one charge enqueued, not two


async def test_same_amount_written_differently_is_the_same_request(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "order-1002"}
    first = await client.post("/payments", json=payment(amount="42.90"), headers=headers)
    second = await client.post("/payments", json=payment(amount="42.9"), headers=headers)
    assert second.json()["id"] == first.json()["id"]


async def test_same_key_with_another_body_is_a_422(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    headers = {"Idempotency-Key": "order-1003"}
    first = await client.post("/payments", json=payment(), headers=headers)
    other = await client.post("/payments", json=payment(amount="43.00"), headers=headers)

    assert other.status_code == 422
    error = other.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert error["payment_id"] == first.json()["id"]
    assert len(await queued_messages(redis)) == 1


async def test_concurrent_requests_with_one_key_make_one_payment(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    headers = {"Idempotency-Key": "burst-1"}
    responses = await asyncio.gather(
        *(client.post("/payments", json=payment(), headers=headers) for _ in range(40))
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(await queued_messages(redis)) == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
async def test_a_malformed_idempotency_key_is_a_400(client: httpx.AsyncClient, key: str) -> None:
    response = await client.post(
        "/payments",
        content=json.dumps(payment()).encode(),
        headers=[
            (b"content-type", b"application/json"),
            (b"idempotency-key", key.encode("latin-1")),
        ],
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "Idempotency-Key"


async def test_a_255_character_key_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/payments", json=payment(), headers={"Idempotency-Key": "k" * 255}
    )
    assert response.status_code == 202
    assert response.json()["idempotency_key"] == "k" * 255


async def test_unknown_payment_is_a_404(client: httpx.AsyncClient) -> None:
    for payment_id in ("pay_000000000000000000000000", "nope", "pay_../../etc"):
        response = await client.get(f"/payments/{payment_id}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "payment_not_found"


async def test_wait_returns_the_outcome_as_soon_as_a_worker_records_it(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    finisher = asyncio.create_task(
        fake_worker_records(
            redis, {"status": "succeeded", "payment_intent": "pi_1", "charge": "ch_1"}
        )
    )
    response = await client.post("/payments?wait=10", json=payment())
    await finisher

    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"
    assert response.json()["confirmation"] == "pi_1"


async def test_wait_answers_the_failure_with_its_status_and_the_payment_id(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    finisher = asyncio.create_task(
        fake_worker_records(
            redis,
            {
                "status": "failed",
                "error_status": "402",
                "error": json.dumps(
                    {"type": "card_error", "code": "card_declined", "message": "Declined."}
                ),
            },
        )
    )
    response = await client.post("/payments?wait=10", json=payment())
    await finisher

    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "card_declined"
    assert error["payment_id"] == response.headers["location"].rsplit("/", 1)[1]


async def test_wait_gives_a_202_when_no_outcome_came_in_time(client: httpx.AsyncClient) -> None:
    response = await client.post("/payments?wait=1", json=payment())
    assert response.status_code == 202
    assert response.json()["status"] == "queued"


@pytest.mark.parametrize("wait", ["31", "-1", "abc", "1.5"])
async def test_wait_out_of_range_is_a_400(client: httpx.AsyncClient, wait: str) -> None:
    response = await client.post(f"/payments?wait={wait}", json=payment())
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "wait"


@pytest.mark.parametrize("query", ["?wiat=10", "?wait=1&expand[]=charge"])
async def test_a_misspelt_or_unknown_parameter_is_refused_before_any_payment(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis, query: str
) -> None:
    response = await client.post("/payments" + query, json=payment())
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parameter_unknown"
    assert response.json()["error"]["param"] in query
    assert not await redis.keys("payments:record:*")  # nothing was accepted


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/payments/pay_aaaaaaaaaaaaaaaaaaaaaaaa/refunds?wiat=5"),
        ("POST", "/payments/pay_aaaaaaaaaaaaaaaaaaaaaaaa/cancel?wiat=5"),
        ("POST", "/payments/pay_aaaaaaaaaaaaaaaaaaaaaaaa/capture?wiat=5"),
        ("GET", "/cus_A/payments?limt=5"),
        ("GET", "/payments/pay_aaaaaaaaaaaaaaaaaaaaaaaa?expand[]=charge"),
        (
            "GET",
            "/payments/pay_aaaaaaaaaaaaaaaaaaaaaaaa/refunds/ref_aaaaaaaaaaaaaaaaaaaaaaaa?wait=5",
        ),
    ],
)
async def test_every_route_refuses_a_parameter_it_does_not_take(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    """Before looking the payment up: the same answer whether it exists or not."""
    response = await client.request(method, path, json={})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parameter_unknown"
    assert response.json()["error"]["param"] in ("wiat", "limt", "expand[]", "wait")


async def test_a_read_of_one_payment_with_a_parameter_is_refused_and_without_it_answers(
    client: httpx.AsyncClient,
) -> None:
    accepted = await client.post("/payments", json=payment(), headers={"Idempotency-Key": "r-1"})
    path = "/payments/" + accepted.json()["id"]
    assert (await client.get(path + "?foo=1")).json()["error"]["param"] == "foo"
    plain = await client.get(path)
    assert plain.status_code == 200
    assert plain.json()["id"] == accepted.json()["id"]


async def test_wrong_method_and_unknown_route_answer_json(client: httpx.AsyncClient) -> None:
    wrong = await client.delete("/payments")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    missing = await client.get("/nowhere/at/all")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"
    # The batch's path is not a payment id: any method but POST is a wrong method there.
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS"):
        batch = await client.request(method, "/payments/batch")
        assert batch.status_code == 405, method
        assert batch.headers["allow"] == "POST", method
    # Allow names every method the path takes, not the first route's alone.
    assert (await client.put("/payments")).headers["allow"] == "GET, POST"
    assert (await client.delete("/payments/pay_" + "a" * 24)).headers["allow"] == "GET"


@pytest.mark.parametrize(
    ("method", "path", "body", "code"),
    [
        ("GET", "/payments?customer=abc", None, "customer_invalid"),
        ("GET", "/payments?starting_after=xyz", None, "starting_after_invalid"),
        ("GET", "/cus_A/payments?starting_after=xyz", None, "starting_after_invalid"),
        ("POST", "/payments", payment(capture_method="later"), "capture_method_invalid"),
    ],
)
async def test_each_bad_field_has_its_own_code_and_a_message_in_words(
    client: httpx.AsyncClient, method: str, path: str, body: Any, code: str
) -> None:
    response = await client.request(method, path, json=body, headers={"Idempotency-Key": "b-1"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"].startswith(code.removesuffix("_invalid") + " must be")
    assert "pattern" not in error["message"]
    assert "ch_" not in error["message"]


async def test_redis_down_is_a_503_with_an_error_object() -> None:
    from api.main import create_app

    settings = Settings(environment="test", redis_url="redis://127.0.0.1:9/0")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            accept = await client.post("/payments", json=payment())
            ready = await client.get("/readyz")
            alive = await client.get("/healthz")

    assert accept.status_code == 503
    assert accept.json()["error"]["code"] == "redis_unavailable"
    assert accept.headers["retry-after"] == "1"
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "redis_unavailable"
    assert ready.headers["retry-after"] == "1"  # every 503 says when to come back
    assert alive.status_code == 200


async def test_customer_payments_come_back_as_one_page_with_a_cursor(
    client: httpx.AsyncClient, gateway: FakeListGateway
) -> None:
    charge = ChargeSummary(
        id="ch_2",
        amount="42.99",
        currency="usd",
        status="succeeded",
        created=1_700_000_000,
        payment_intent="pi_2",
        description=None,
        payment_id=None,
        failure_code=None,
        refunded=False,
    )
    gateway.pages["cus_Abc123"] = ChargePage(data=[charge], has_more=True)

    response = await client.get("/cus_Abc123/payments?limit=1")

    assert response.status_code == 200
    body = response.json()
    assert body["data"][0]["amount"] == "42.99"
    assert body["has_more"] is True
    assert body["next_cursor"] == "ch_2"


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/acct_1/payments", "customer_id"),
        ("/cus_Abc123/payments?limit=0", "limit"),
        ("/cus_Abc123/payments?limit=101", "limit"),
        ("/cus_Abc123/payments?limit=ten", "limit"),
        ("/cus_Abc123/payments?starting_after=%27;drop", "starting_after"),
    ],
)
async def test_customer_payments_refuse_bad_parameters(
    client: httpx.AsyncClient, path: str, param: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (CustomerNotFound("No such customer: cus_Abc123"), 404, "customer_not_found"),
        (StripeUnavailable(), 503, "stripe_unavailable"),
    ],
)
async def test_customer_payments_report_stripe_failures(
    client: httpx.AsyncClient, gateway: FakeListGateway, error: Exception, status: int, code: str
) -> None:
    gateway.error = error
    response = await client.get("/cus_Abc123/payments")
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_openapi_documents_the_error_object_on_every_route(app: FastAPI) -> None:
    schema = app.openapi()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if path == "/healthz":
                continue
            errors = [s for s in operation["responses"] if s.startswith(("4", "5"))]
            assert errors, f"{method.upper()} {path} documents no error answer"
            # A batch's error status may carry its items' results, when they all got it.
            answers = ("/ErrorResponse", "/PaymentBatchAnswer" if path == "/payments/batch" else "")
            for status in errors:
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"]["$ref"].endswith(tuple(filter(None, answers)))


async def test_a_full_queue_pushes_back_with_503_and_retry_after(
    settings: Settings, redis: fakeredis.FakeAsyncRedis
) -> None:
    from api.main import create_app

    small = settings.model_copy(update={"queue_max_backlog": 2})
    app = create_app(small, redis=redis)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = [
                await client.post("/payments", json=payment(), headers={"Idempotency-Key": k})
                for k in ("a", "b")
            ]
            refused = await client.post(
                "/payments", json=payment(), headers={"Idempotency-Key": "c"}
            )
            replay = await client.post(
                "/payments", json=payment(), headers={"Idempotency-Key": "a"}
            )

    assert [r.status_code for r in first] == [202, 202]
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["error"]["code"] == "queue_full"
    assert replay.status_code == 202  # a replay of an accepted payment still answers
    assert len(await queued_messages(redis)) == 2


async def test_an_accepted_payment_is_filed_for_the_recovery_sweep(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    response = await client.post("/payments", json=payment())
    assert await redis.zscore("payments:pending", response.json()["id"]) is not None


async def test_a_payment_is_answered_with_exactly_the_documented_fields(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    response = await client.post("/payments", json=payment(), headers={"Idempotency-Key": "o-1"})
    polled = await client.get(response.headers["location"])

    documented = app.openapi()["components"]["schemas"]["Payment"]["properties"]
    # next_action, error, client_secret and expires_at appear only once the payment has them:
    # never as nulls; so do an authorization's fields (capture_method manual).
    authorization = {"capture_method", "capture", "amount_captured", "captured_at",
                     "canceled_at", "cancellation_reason"}  # fmt: skip
    expected = set(documented) - {"next_action", "error", "client_secret", "expires_at"}
    expected -= authorization
    for body in (response.json(), polled.json()):
        assert set(body) == expected
        assert body["object"] == "payment"
        assert body["idempotency_key"] == "o-1"
        assert body["confirmation"] is None


async def test_a_failed_payment_reads_back_with_its_error_and_no_other_extra_field(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    accepted = (await client.post("/payments", json=payment())).json()
    error = {"type": "card_error", "code": "card_declined", "message": "Declined.", "x": 1}
    await redis.hset(
        record_key(accepted["id"]),
        mapping={"status": "failed", "error": json.dumps(error), "error_status": "402"},
    )

    body = (await client.get(f"/payments/{accepted['id']}")).json()

    assert body["status"] == "failed"
    assert body["error"] == error  # as stored, extra fields included, no nulls added
    assert "next_action" not in body


async def test_customer_payments_carry_every_documented_charge_field(
    client: httpx.AsyncClient, gateway: FakeListGateway, app: FastAPI
) -> None:
    charge = ChargeSummary(
        id="ch_1",
        amount="500",
        currency="jpy",
        status="failed",
        created=1_700_000_000,
        payment_intent=None,
        description="order 7",
        payment_id="pay_000000000000000000000001",
        failure_code="card_declined",
        refunded=False,
        metadata={"order_id": "7"},
    )
    gateway.pages["cus_Abc123"] = ChargePage(data=[charge], has_more=False)

    body = (await client.get("/cus_Abc123/payments")).json()

    schemas = app.openapi()["components"]["schemas"]
    assert set(body) == set(schemas["CustomerPayments"]["properties"])
    assert body["object"] == "list"
    assert body["next_cursor"] is None
    assert body["data"] == [
        {
            "id": "ch_1",
            "amount": "500",
            "currency": "jpy",
            "status": "failed",
            "created": 1_700_000_000,
            "payment_intent": None,
            "description": "order 7",
            "payment_id": "pay_000000000000000000000001",
            "failure_code": "card_declined",
            "refunded": False,
            "amount_refunded": "0",
            "metadata": {"order_id": "7"},
        }
    ]


async def test_openapi_payment_status_lists_every_status_the_service_has(app: FastAPI) -> None:
    schemas = app.openapi()["components"]["schemas"]
    status = schemas["Payment"]["properties"]["status"]
    name = status["$ref"].rsplit("/", 1)[1]
    assert sorted(schemas[name]["enum"]) == sorted(s.value for s in Status)


async def test_openapi_declares_the_headers_post_payments_reads(app: FastAPI) -> None:
    post = app.openapi()["paths"]["/payments"]["post"]
    params = {p["name"]: p for p in post["parameters"]}

    key = params["Idempotency-Key"]
    assert key["in"] == "header"
    assert not key["required"]
    assert key["schema"]["maxLength"] == 255
    # What a client generated from the document needs to know about replays and mismatches.
    assert "Idempotent-Replayed: true" in key["description"]
    assert "422" in key["description"]
    pattern = re.compile(key["schema"]["pattern"])
    assert pattern.search("order-1001")
    assert pattern.search("x" * 255)
    assert not pattern.search("caf\u00e9")

    assert params["X-Request-ID"]["in"] == "header"
    assert params["wait"]["in"] == "query"
    assert post["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "account_id",
        "amount",
    ]
    for status in ("200", "202"):
        assert {"Location", "Idempotency-Key", "Idempotent-Replayed"} <= set(
            post["responses"][status]["headers"]
        )


async def test_openapi_documents_the_statuses_each_route_returns(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    post = paths["/payments"]["post"]["responses"]
    listing = paths["/{customer_id}/payments"]["get"]["responses"]

    # 409 only for a replay of a payment that expired or was canceled; concurrent requests
    # with one key share a payment and never conflict.
    examples = post["409"]["content"]["application/json"]["examples"].values()
    assert {e["value"]["error"]["code"] for e in examples} == {
        "payment_expired",
        "payment_canceled",
    }
    assert {"400", "402", "413", "415", "422", "429", "503"} <= set(post)
    assert "429" in listing  # the client's request budget, or Stripe rate limiting the list call
    for limited in (post["429"], listing["429"]):
        assert {"Retry-After", "RateLimit", "RateLimit-Policy"} <= set(limited["headers"])
    for operations in paths.values():
        for operation in operations.values():
            if "503" in operation["responses"]:
                assert "Retry-After" in operation["responses"]["503"]["headers"]


async def test_wait_is_bounded_by_max_wait_seconds_and_documented_so(
    settings: Settings, redis: fakeredis.FakeAsyncRedis
) -> None:
    from api.main import create_app

    app = create_app(settings.model_copy(update={"max_wait_seconds": 5}), redis=redis)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            refused = await client.post("/payments?wait=6", json=payment())
            accepted = await client.post("/payments?wait=0", json=payment())
    wait = next(
        p for p in app.openapi()["paths"]["/payments"]["post"]["parameters"] if p["name"] == "wait"
    )

    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "wait"
    assert "from 0 to 5" in refused.json()["error"]["message"]
    assert accepted.status_code == 202
    assert wait["schema"]["maximum"] == 5


async def test_a_payment_that_failed_with_a_503_says_when_to_retry(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    finisher = asyncio.create_task(
        fake_worker_records(
            redis,
            {
                "status": "failed",
                "error_status": "503",
                "error": json.dumps(
                    {"type": "api_error", "code": "stripe_unavailable", "message": "Down."}
                ),
            },
        )
    )
    response = await client.post("/payments?wait=10", json=payment())
    await finisher

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "stripe_unavailable"
    assert int(response.headers["retry-after"]) > 0


async def test_a_stripe_failure_without_its_own_retry_after_still_gets_one(
    client: httpx.AsyncClient, gateway: FakeListGateway
) -> None:
    gateway.error = StripeUnavailable(code="stripe_authentication_failed")
    response = await client.get("/cus_Abc123/payments")
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0


async def test_health_checks_answer_their_documented_shapes(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    schemas = app.openapi()["components"]["schemas"]
    alive = (await client.get("/healthz")).json()
    ready = (await client.get("/readyz")).json()
    assert alive == {"status": "ok"}
    assert ready == {"status": "ready", "redis": "ok"}
    assert set(alive) == set(schemas["Health"]["properties"])
    assert set(ready) == set(schemas["Readiness"]["properties"])
