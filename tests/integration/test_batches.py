"""POST /payments/batch through real processes: a batch's good items are each charged once at
the Stripe emulator whatever its bad items are, and the same batch sent again charges nothing
new, each item answered as a replay."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import StripeAdmin, final

pytestmark = pytest.mark.integration


def test_a_batch_charges_its_good_items_once_and_a_replay_charges_nothing(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    run = customer[-8:]
    good = {i: f"{1 + i / 100:.2f}" for i in range(100)}
    items: list[Any] = [
        {"idempotency_key": f"{run}-{i}", "account_id": customer, "amount": amount,
         "payment_method": "pm_card_visa"}
        for i, amount in good.items()
    ]  # fmt: skip
    # Five bad items among the good ones: each refused alone, as POST /payments refuses it.
    bad = {
        7: {**items[7], "amount": "0.10"},  # under Stripe's minimum
        23: {**items[23], "amount": 1.23},  # a JSON number
        41: {k: v for k, v in items[41].items() if k != "idempotency_key"},
        66: {**items[66], "surprise": "x"},
        90: "not a payment",
    }
    for i, item in bad.items():
        items[i] = item
        del good[i]

    first = api.post("/payments/batch", json={"payments": items})

    assert first.status_code == 207
    results = first.json()["results"]
    assert [r["status"] for r in results] == [400 if i in bad else 202 for i in range(100)]
    ids = {i: results[i]["payment"]["id"] for i in good}
    outcomes = {i: final(api, payment_id) for i, payment_id in ids.items()}
    assert {o["status"] for o in outcomes.values()} == {"succeeded"}
    intents = stripe.payment_intents(customer)
    assert len(intents) == len(good) == 95
    assert sorted(pi["amount"] for pi in intents) == sorted(
        int(amount.replace(".", "")) for amount in good.values()
    )
    assert {pi["metadata"]["payment_id"] for pi in intents} == set(ids.values())

    again = api.post("/payments/batch", json={"payments": items})

    assert again.status_code == 207
    replayed = again.json()["results"]
    for i in range(100):
        if i in bad:
            assert replayed[i] == results[i]
            continue
        assert replayed[i]["status"] == 200
        assert replayed[i]["replayed"] is True
        assert replayed[i]["payment"]["id"] == ids[i]
        assert replayed[i]["payment"]["confirmation"] == outcomes[i]["payment_intent"]
    assert len(stripe.payment_intents(customer)) == 95
