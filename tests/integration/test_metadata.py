"""A payment's metadata and description on real processes: from the request to the
PaymentIntent at the emulator, and back in the payment, the customer's list and the callback."""

from __future__ import annotations

import base64
import secrets

import httpx
import pytest

from tests.integration.callback_receiver import CallbackReceiver
from tests.integration.stack import module_stack
from tests.support import StripeAdmin, callback_secret, wait_until

pytestmark = pytest.mark.integration

ENV = {
    "CALLBACK_SIGNING_SECRETS": "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
    # The test's receiver listens on 127.0.0.1 (refused otherwise).
    "CALLBACK_ALLOW_PRIVATE_NETWORKS": "true",
    "STRIPE_MAX_RPS": "0",
}
# Non-ASCII on purpose: it crosses JSON, the accept script, the record, Stripe's form encoding.
METADATA = {"order_id": "1001", "customer_ref": "Zoë-17 ✓", "note": "a b&c=d"}
DESCRIPTION = "Order 1001 — 2 items"


stack, api, stripe = module_stack("metadata", ENV)


def test_metadata_and_description_reach_the_payment_intent_and_come_back_everywhere(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    with CallbackReceiver({"client": callback_secret(api)}, fail_first=False) as receiver:
        body = {"account_id": customer, "amount": "42.99", "description": DESCRIPTION,
                "metadata": METADATA, "callback_url": receiver.url}  # fmt: skip
        answer = api.post("/payments?wait=30", json=body, headers={"Idempotency-Key": "md-1"})
        assert answer.status_code == 200, answer.text
        paid = answer.json()
        wait_until(lambda: "payment.succeeded" in receiver.acknowledged(), timeout=60,
                   what="the payment.succeeded callback")  # fmt: skip
        callback = receiver.acknowledged()["payment.succeeded"]["data"]

    (intent,) = stripe.payment_intents(customer)
    assert intent["id"] == paid["payment_intent"]
    assert intent["description"] == DESCRIPTION
    # The client's keys beside the service's own, which the client could not set.
    client = api.get("/clients/me/callback-secret").json()["client"]
    assert intent["metadata"] == {**METADATA, "payment_id": paid["id"], "client": client}
    (charge,) = stripe.charges(customer)
    assert charge["description"] == DESCRIPTION

    polled = api.get(f"/payments/{paid['id']}").json()
    (item,) = api.get(f"/{customer}/payments").json()["data"]
    for shown in (paid, polled, item, callback):
        assert shown["metadata"] == METADATA
        assert shown["description"] == DESCRIPTION
    assert item["payment_id"] == paid["id"]


def test_the_same_key_with_other_metadata_is_refused_and_a_reserved_key_never_reaches_stripe(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    headers = {"Idempotency-Key": "md-2"}
    body = {"account_id": customer, "amount": "10.00", "metadata": {"order_id": "1"}}

    first = api.post("/payments?wait=30", json=body, headers=headers)
    other = api.post("/payments", json={**body, "metadata": {"order_id": "2"}}, headers=headers)
    reserved = api.post(
        "/payments", json={**body, "metadata": {"payment_id": "pay_forged"}},
        headers={"Idempotency-Key": "md-3"},
    )  # fmt: skip

    assert first.status_code == 200
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert reserved.status_code == 400
    assert reserved.json()["error"]["param"] == "metadata[payment_id]"
    (intent,) = stripe.payment_intents(customer)
    assert intent["metadata"]["order_id"] == "1"
    assert intent["metadata"]["payment_id"] == first.json()["id"]
