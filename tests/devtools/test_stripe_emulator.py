"""The emulator answers the list of PaymentIntents as Stripe does (the service reconciles through
it): by customer and creation time, newest first, a page at a time."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
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
