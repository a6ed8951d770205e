"""The emulator answers the lists the service reads as Stripe does: PaymentIntents (the service
reconciles through them) by customer and creation time, and events (the catch-up round reads
them) by type, creation time and whether their webhook was delivered; newest first, a page at a
time; a PaymentIntent's description, copied to its charge."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from functools import cache
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from devtools.stripe_emulator import THREE_D_SECURE_CARD, build_app

# localstripe's app is one module-level object, bound to the loop it first runs on.
# Its routes are plain functions, which aiohttp warns about.
pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:Bare functions are deprecated:DeprecationWarning"),
]

AUTH = {"Authorization": "Bearer sk_test_emulator"}


@cache
def emulator() -> Any:
    return build_app()  # patches localstripe in this process: once


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server() -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(emulator())) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module")
async def stripe(server: TestClient[Any, Any]) -> TestClient[Any, Any]:
    (await server.delete("/_config/data")).raise_for_status()
    return server


async def post(client: TestClient[Any, Any], path: str, **data: Any) -> dict[str, Any]:
    answer = await client.post(path, data=data, headers=AUTH)
    assert answer.status == 200, await answer.text()
    body: dict[str, Any] = await answer.json()
    return body


async def listed(client: TestClient[Any, Any], **params: Any) -> tuple[int, dict[str, Any]]:
    answer = await client.get("/v1/payment_intents", params=params, headers=AUTH)
    return answer.status, await answer.json()


async def customer_paying(client: TestClient[Any, Any], card: str) -> str:
    cus = await post(client, "/v1/customers", email="t@example.com")
    await post(client, f"/v1/payment_methods/{card}/attach", customer=cus["id"])
    return str(cus["id"])


async def intent(client: TestClient[Any, Any], customer: str, card: str, n: int) -> str:
    body = await post(
        client, "/v1/payment_intents", customer=customer, amount=100 + n, currency="usd",
        payment_method=card, confirm="true", off_session="true",
        **{"metadata[payment_id]": f"pay_{n}"},
    )  # fmt: skip
    return str(body["id"])


async def test_a_customers_intents_are_listed_newest_first_whatever_their_status(
    stripe: TestClient[Any, Any],
) -> None:
    alice = await customer_paying(stripe, THREE_D_SECURE_CARD)
    bob = await customer_paying(stripe, "pm_card_visa")
    mine = [await intent(stripe, alice, THREE_D_SECURE_CARD, n) for n in range(3)]
    await intent(stripe, bob, "pm_card_visa", 9)

    status, page = await listed(stripe, customer=alice)

    assert status == 200
    assert page["object"] == "list"
    assert [pi["id"] for pi in page["data"]] == mine[::-1]
    assert {pi["status"] for pi in page["data"]} == {"requires_action"}  # no charge made
    assert page["data"][0]["metadata"] == {"payment_id": "pay_2"}
    assert page["has_more"] is False


async def test_pages_follow_starting_after_until_has_more_is_false(
    stripe: TestClient[Any, Any],
) -> None:
    alice = await customer_paying(stripe, "pm_card_visa")
    made = [await intent(stripe, alice, "pm_card_visa", n) for n in range(5)]

    seen: list[str] = []
    params: dict[str, Any] = {"customer": alice, "limit": 2}
    while True:
        _, page = await listed(stripe, **params)
        seen += [pi["id"] for pi in page["data"]]
        if not page["has_more"]:
            break
        params["starting_after"] = page["data"][-1]["id"]

    assert seen == made[::-1]


async def test_created_bounds_filter_the_list(stripe: TestClient[Any, Any]) -> None:
    alice = await customer_paying(stripe, "pm_card_visa")
    made = await intent(stripe, alice, "pm_card_visa", 1)
    now = int(time.time())

    assert [pi["id"] for pi in (await listed(
        stripe, customer=alice, **{"created[gte]": now - 60}))[1]["data"]] == [made]  # fmt: skip
    assert (await listed(stripe, customer=alice, **{"created[gt]": now + 60}))[1]["data"] == []
    assert (await listed(stripe, customer=alice, **{"created[lte]": now - 60}))[1]["data"] == []
    both = {"created[gte]": now - 60, "created[lt]": now + 60}
    assert len((await listed(stripe, customer=alice, **both))[1]["data"]) == 1


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 101}, {"created[since]": 1}, {"created[gte]": "soon"}, {"foo": 1}],
)
async def test_what_stripe_refuses_is_refused(
    stripe: TestClient[Any, Any], params: dict[str, Any]
) -> None:
    status, body = await listed(stripe, **params)
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"


async def test_an_unknown_customer_is_a_404(stripe: TestClient[Any, Any]) -> None:
    status, _ = await listed(stripe, customer="cus_Nobody")
    assert status == 404


# --- events ------------------------------------------------------------------------------------


async def test_a_payment_intents_description_is_kept_and_copied_to_its_charge(
    stripe: TestClient[Any, Any],
) -> None:
    customer = await customer_paying(stripe, "pm_card_visa")
    made = await post(
        stripe, "/v1/payment_intents", customer=customer, amount=500, currency="usd",
        payment_method="pm_card_visa", confirm="true", off_session="true",
        description="Order 1001", **{"metadata[order_id]": "1001"},
    )  # fmt: skip
    plain = await post(
        stripe, "/v1/payment_intents", customer=customer, amount=600, currency="usd",
        payment_method="pm_card_visa", confirm="true", off_session="true",
    )  # fmt: skip
    charge = await stripe.get(f"/v1/charges/{made['latest_charge']['id']}", headers=AUTH)
    too_long = await stripe.post(
        "/v1/payment_intents", headers=AUTH,
        data={"customer": customer, "amount": 500, "currency": "usd", "description": "d" * 1001},
    )  # fmt: skip

    assert (made["description"], made["metadata"]) == ("Order 1001", {"order_id": "1001"})
    assert (await charge.json())["description"] == "Order 1001"
    assert plain["description"] is None
    assert too_long.status == 400


async def events(client: TestClient[Any, Any], **params: Any) -> tuple[int, dict[str, Any]]:
    answer = await client.get("/v1/events", params=params, headers=AUTH)
    return answer.status, await answer.json()


@pytest.fixture
def webhook_endpoints() -> Iterator[None]:
    from localstripe import webhooks

    yield
    webhooks._webhooks.clear()


async def paid_charge(client: TestClient[Any, Any]) -> tuple[str, str]:
    alice = await customer_paying(client, "pm_card_visa")
    pi = await intent(client, alice, "pm_card_visa", 1)
    body = await (await client.get(f"/v1/payment_intents/{pi}", headers=AUTH)).json()
    charge = body["latest_charge"]
    return pi, charge if isinstance(charge, str) else charge["id"]


async def test_events_are_listed_newest_first_by_types_and_creation_a_page_at_a_time(
    stripe: TestClient[Any, Any],
) -> None:
    pi, charge = await paid_charge(stripe)
    await post(stripe, "/v1/refunds", charge=charge, amount="50")
    await post(stripe, "/v1/refunds", charge=charge, amount="25")  # a refund sends its event
    now = int(time.time())
    wanted = {"types[0]": "payment_intent.succeeded", "types[1]": "charge.refunded",
              "created[gte]": now - 60, "created[lte]": now + 60}  # fmt: skip

    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {**wanted, "limit": 2}
    while True:
        status, page = await events(stripe, **params)
        assert status == 200
        seen += page["data"]
        if not page["has_more"]:
            break
        params["starting_after"] = page["data"][-1]["id"]

    assert [e["type"] for e in seen] == [
        "charge.refunded", "charge.refunded", "payment_intent.succeeded"]  # fmt: skip
    assert seen[0]["data"]["object"]["id"] == charge
    assert seen[0]["data"]["object"]["amount_refunded"] == 75
    assert seen[2]["data"]["object"]["id"] == pi
    assert (await events(stripe, **{**wanted, "created[gte]": now + 60}))[1]["data"] == []
    _, one_type = await events(stripe, type="payment_intent.*")
    assert {e["type"] for e in one_type["data"]} == {"payment_intent.succeeded"}


async def test_delivery_success_tells_events_whose_webhook_failed_or_is_pending(
    stripe: TestClient[Any, Any], webhook_endpoints: None
) -> None:
    from localstripe.webhooks import register_webhook

    # An endpoint that answers nothing (connection refused) for refunds only.
    register_webhook("down", "http://127.0.0.1:9/webhooks", "whsec_x", ["charge.refunded"])
    _, charge = await paid_charge(stripe)
    await post(stripe, "/v1/refunds", charge=charge)

    _, pending = await events(stripe, delivery_success="false")
    assert [e["type"] for e in pending["data"]] == ["charge.refunded"]  # not yet sent
    await asyncio.sleep(1.5)  # the emulator sends a second after the event, as Stripe does

    _, failed = await events(stripe, delivery_success="false")
    _, fine = await events(stripe, delivery_success="true")
    assert [e["type"] for e in failed["data"]] == ["charge.refunded"]
    # No endpoint wanted it: nothing pending, nothing failed.
    assert "payment_intent.succeeded" in {e["type"] for e in fine["data"]}
    assert "charge.refunded" not in {e["type"] for e in fine["data"]}


@pytest.mark.parametrize(
    "params",
    [
        {"type": "charge.refunded", "types[0]": "charge.refunded"},
        {"delivery_success": "maybe"},
        {"types": "charge.refunded"},
        {"limit": 101},
        {"created[after]": 1},
    ],
)
async def test_what_stripe_refuses_in_an_events_list_is_refused(
    stripe: TestClient[Any, Any], params: dict[str, Any]
) -> None:
    status, body = await events(stripe, **params)
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"


async def authorization(client: TestClient[Any, Any], amount: int = 4299) -> dict[str, Any]:
    customer = await customer_paying(client, "pm_card_visa")
    return await post(
        client, "/v1/payment_intents", customer=customer, amount=amount, currency="usd",
        payment_method="pm_card_visa", confirm="true", off_session="true",
        capture_method="manual",
    )  # fmt: skip


async def test_an_authorization_is_captured_in_part_as_stripe_does(
    stripe: TestClient[Any, Any],
) -> None:
    held = await authorization(stripe)

    captured = await post(stripe, f"/v1/payment_intents/{held['id']}/capture",
                          amount_to_capture=3000)  # fmt: skip
    again = await stripe.post(f"/v1/payment_intents/{held['id']}/capture", headers=AUTH)
    charge = await (
        await stripe.get(f"/v1/charges/{captured['latest_charge']['id']}", headers=AUTH)
    ).json()

    assert (held["status"], held["amount_capturable"], held["amount_received"]) == (
        "requires_capture", 4299, 0)  # fmt: skip
    assert (captured["status"], captured["amount_received"]) == ("succeeded", 3000)
    assert captured["amount_capturable"] == 0
    assert (charge["amount"], charge["amount_captured"], charge["captured"]) == (4299, 3000, True)
    assert again.status == 400
    assert (await again.json())["error"]["code"] == "payment_intent_unexpected_state"


async def test_more_than_was_authorized_is_refused(stripe: TestClient[Any, Any]) -> None:
    held = await authorization(stripe)

    answer = await stripe.post(f"/v1/payment_intents/{held['id']}/capture",
                               data={"amount_to_capture": 5000}, headers=AUTH)  # fmt: skip

    assert answer.status == 400
    assert (await answer.json())["error"]["param"] == "amount_to_capture"


async def test_a_void_and_an_expiry_cancel_the_authorization(
    stripe: TestClient[Any, Any],
) -> None:
    voided = await authorization(stripe)
    expired = await authorization(stripe)

    canceled = await post(stripe, f"/v1/payment_intents/{voided['id']}/cancel")
    lapsed = await post(stripe, f"/v1/payment_intents/{expired['id']}/_expire_authorization")
    late = await stripe.post(f"/v1/payment_intents/{voided['id']}/capture", headers=AUTH)

    assert (canceled["status"], canceled["cancellation_reason"]) == ("canceled", None)
    assert canceled["canceled_at"] is not None
    assert (lapsed["status"], lapsed["cancellation_reason"]) == ("canceled", "automatic")
    assert lapsed["amount_received"] == 0
    assert late.status == 400
    assert (await late.json())["error"]["code"] == "payment_intent_unexpected_state"
    events = await stripe.get(
        "/v1/events", params={"type": "payment_intent.canceled"}, headers=AUTH
    )
    sent = {e["data"]["object"]["id"] for e in (await events.json())["data"]}
    assert sent == {voided["id"], expired["id"]}
