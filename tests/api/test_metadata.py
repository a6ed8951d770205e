"""A payment's ``metadata`` and ``description``: Stripe's limits, the service's reserved keys,
part of the request's identity, and shown in every answer and list item."""

from __future__ import annotations

from typing import Any

import fakeredis
import httpx
import pytest

from shared.payments.metadata import MAX_KEYS, RESERVED_KEYS
from shared.stripe.objects import ChargePage, charge_summary
from tests.support import FakeListGateway, payment, queued_charges

ORDER = {"order_id": "1001", "customer_ref": "A-17"}


async def refused(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/payments", json=body)
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    return error


def keys(n: int) -> dict[str, str]:
    return {f"k{i}": "v" for i in range(n)}


# --- what is accepted, and what is refused -------------------------------------------------------


async def test_a_payment_keeps_its_metadata_and_description_in_every_answer(
    client: httpx.AsyncClient,
) -> None:
    body = payment(description="Order 1001", metadata=ORDER)
    accepted = await client.post("/payments", json=body, headers={"Idempotency-Key": "m-1"})
    replayed = await client.post("/payments", json=body, headers={"Idempotency-Key": "m-1"})
    polled = await client.get(accepted.headers["location"])

    assert accepted.status_code == replayed.status_code == 202
    assert replayed.headers["idempotent-replayed"] == "true"
    for answer in (accepted, replayed, polled):
        assert answer.json()["description"] == "Order 1001"
        assert answer.json()["metadata"] == ORDER


async def test_without_them_the_answer_says_none(client: httpx.AsyncClient) -> None:
    accepted = (await client.post("/payments", json=payment())).json()
    assert (accepted["description"], accepted["metadata"]) == (None, {})


@pytest.mark.parametrize(
    "body",
    [
        payment(metadata=keys(MAX_KEYS)),
        payment(metadata={"k" * 40: "v" * 500, "é" * 40: "ü" * 500}),  # characters, not bytes
        payment(description="d" * 1000),
        payment(metadata={"note": "", "order_id": "1"}),
    ],
    ids=["48 keys", "longest key and value", "longest description", "an empty value"],
)
async def test_stripes_limits_are_accepted_up_to_the_last_character(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post("/payments", json=body)
    assert response.status_code == 202, response.text


async def test_a_key_with_an_empty_value_is_not_set_as_on_stripe(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "m-empty"}
    first = await client.post(
        "/payments", json=payment(metadata={"note": "", "order_id": "1"}), headers=headers
    )
    same = await client.post("/payments", json=payment(metadata={"order_id": "1"}), headers=headers)

    assert first.json()["metadata"] == {"order_id": "1"}
    assert same.headers["idempotent-replayed"] == "true"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (payment(metadata=keys(MAX_KEYS + 1)), "metadata", "metadata_invalid"),
        (payment(metadata={"k" * 41: "v"}), f"metadata[{'k' * 41}]", "metadata_invalid"),
        (payment(metadata={"": "v"}), "metadata[]", "metadata_invalid"),
        (payment(metadata={"a[b]": "v"}), "metadata[a[b]]", "metadata_invalid"),
        (payment(metadata={"order_id": "v" * 501}), "metadata[order_id]", "metadata_invalid"),
        (payment(metadata={"order_id": 1001}), "metadata[order_id]", "metadata_invalid"),
        (payment(metadata={"paid": True}), "metadata[paid]", "metadata_invalid"),
        (payment(metadata={"none": None}), "metadata[none]", "metadata_invalid"),
        (payment(metadata={"nested": {"a": "b"}}), "metadata[nested]", "metadata_invalid"),
        (payment(metadata={"list": ["a"]}), "metadata[list]", "metadata_invalid"),
        (payment(metadata=["order_id", "1"]), "metadata", "metadata_invalid"),
        (payment(metadata="order_id=1"), "metadata", "metadata_invalid"),
        (payment(metadata=7), "metadata", "metadata_invalid"),
        (payment(description="d" * 1001), "description", "description_invalid"),
        (payment(description=1001), "description", "description_invalid"),
        (payment(description={"text": "x"}), "description", "description_invalid"),
    ],
    ids=[
        "49 keys",
        "41-character key",
        "empty key",
        "brackets in a key",
        "501-character value",
        "number value",
        "bool value",
        "null value",
        "object value",
        "list value",
        "metadata a list",
        "metadata a string",
        "metadata a number",
        "1001-character description",
        "description a number",
        "description an object",
    ],
)
async def test_metadata_or_description_past_stripes_rules_is_a_400_naming_it(
    client: httpx.AsyncClient,
    redis: fakeredis.FakeAsyncRedis,
    body: dict[str, Any],
    param: str,
    code: str,
) -> None:
    error = await refused(client, body)

    assert (error["param"], error["code"]) == (param, code)
    assert await queued_charges(redis) == []  # nothing queued


@pytest.mark.parametrize("key", sorted(RESERVED_KEYS))
async def test_the_services_own_keys_are_refused_never_overwritten(
    client: httpx.AsyncClient, key: str
) -> None:
    error = await refused(client, payment(metadata={"order_id": "1", key: "mine"}))

    assert error["code"] == "metadata_key_reserved"
    assert error["param"] == f"metadata[{key}]"
    assert "reserved" in error["message"]


async def test_a_null_metadata_or_description_is_none(client: httpx.AsyncClient) -> None:
    response = await client.post("/payments", json=payment(metadata=None, description=None))
    assert response.status_code == 202
    assert (response.json()["metadata"], response.json()["description"]) == ({}, None)


# --- part of the request's identity ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "again"),
    [
        ({"metadata": ORDER}, {"metadata": {**ORDER, "order_id": "1002"}}),
        ({"metadata": ORDER}, {}),
        ({}, {"metadata": ORDER}),
        ({"metadata": ORDER}, {"metadata": {**ORDER, "extra": "1"}}),
        ({"description": "Order 1001"}, {"description": "Order 1002"}),
        ({"description": "Order 1001"}, {}),
        ({"description": "x"}, {"metadata": {"description": "x"}}),
    ],
    ids=[
        "another value",
        "metadata dropped",
        "metadata added",
        "a key added",
        "another description",
        "description dropped",
        "description moved into metadata",
    ],
)
async def test_the_same_key_with_other_metadata_or_description_is_a_422(
    client: httpx.AsyncClient,
    redis: fakeredis.FakeAsyncRedis,
    first: dict[str, Any],
    again: dict[str, Any],
) -> None:
    headers = {"Idempotency-Key": "order-1001"}
    accepted = await client.post("/payments", json=payment(**first), headers=headers)
    other = await client.post("/payments", json=payment(**again), headers=headers)

    assert accepted.status_code == 202
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert other.json()["error"]["payment_id"] == accepted.json()["id"]
    assert len(await queued_charges(redis)) == 1


async def test_the_same_metadata_in_another_key_order_is_the_same_request(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "order-1001"}
    first = await client.post("/payments", json=payment(metadata={"a": "1", "b": "2"}),
                              headers=headers)  # fmt: skip
    again = await client.post("/payments", json=payment(metadata={"b": "2", "a": "1"}),
                              headers=headers)  # fmt: skip

    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


async def test_empty_metadata_and_description_are_the_same_request_as_none(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "order-1001"}
    first = await client.post("/payments", json=payment(), headers=headers)
    again = await client.post("/payments", json=payment(metadata={}, description=""),
                              headers=headers)  # fmt: skip
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


# --- the customer's list -----------------------------------------------------------------------


async def test_each_list_item_carries_the_charges_metadata_without_the_services_keys(
    client: httpx.AsyncClient, gateway: FakeListGateway
) -> None:
    ours = {"payment_id": "pay_" + "a" * 24, "client": "shop", **ORDER}
    charges: list[dict[str, Any]] = [
        # Made here: Stripe copied the PaymentIntent's metadata and description to the charge.
        {"id": "ch_1", "amount": 4299, "currency": "usd", "status": "succeeded", "created": 3,
         "payment_intent": {"id": "pi_1", "metadata": ours, "description": "Order 1001"},
         "metadata": ours, "description": "Order 1001"},
        # A charge without its own copy: its PaymentIntent's.
        {"id": "ch_2", "amount": 4299, "currency": "usd", "status": "succeeded", "created": 2,
         "payment_intent": {"id": "pi_2", "metadata": ours, "description": "Order 1001"},
         "metadata": {}, "description": None},
        # Made in Stripe's dashboard.
        {"id": "ch_3", "amount": 500, "currency": "usd", "status": "succeeded", "created": 1,
         "payment_intent": None, "metadata": {"note": "by hand"}, "description": "Phone order"},
        {"id": "ch_4", "amount": 500, "currency": "usd", "status": "succeeded", "created": 0,
         "payment_intent": "pi_4"},
    ]  # fmt: skip
    gateway.pages["cus_Abc123"] = ChargePage(
        data=[charge_summary(c) for c in charges], has_more=False
    )

    items = (await client.get("/cus_Abc123/payments")).json()["data"]

    assert [(i["metadata"], i["description"]) for i in items] == [
        (ORDER, "Order 1001"),
        (ORDER, "Order 1001"),
        ({"note": "by hand"}, "Phone order"),
        ({}, None),
    ]
    assert items[0]["payment_id"] == "pay_" + "a" * 24
