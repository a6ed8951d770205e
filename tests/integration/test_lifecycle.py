"""A payment's life after its first answer, on real processes: Stripe's signed webhooks (sent
by the emulator, or made here as Stripe would send them), 3-D Secure completed through the
emulator's ``_authenticate``, refunds and signed callbacks."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.stripe_emulator import THREE_D_SECURE_CARD
from tests.integration.callback_receiver import CallbackReceiver
from tests.integration.stack import Stack, final, module_stack, pay
from tests.support import (
    WEBHOOK_SECRET,
    StripeAdmin,
    callback_secret,
    stripe_event,
    stripe_signature,
    wait_until,
)

pytestmark = pytest.mark.integration

CALLBACK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
# A named client with callback signing secrets of its own (API_CLIENTS), read by the workers.
OWN_KEY = "sk_client_" + secrets.token_hex(16)
OWN_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
OWN_CLIENT = {
    "name": "shop-own-secret",
    "keys": [OWN_KEY],
    "callback_signing_secrets": [OWN_SECRET],
}
ENV = {
    "API_CLIENTS": json.dumps([OWN_CLIENT]),
    "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "STRIPE_MAX_RPS": "0",
    "CHARGE_RETRY_BACKOFF_SECONDS": "0.2",
    "CHARGE_RETRY_BACKOFF_MAX_SECONDS": "2",
    "CALLBACK_SIGNING_SECRETS": CALLBACK_SECRET,
    # The test's receiver listens on 127.0.0.1 (refused otherwise), and retries come quickly.
    "CALLBACK_ALLOW_PRIVATE_NETWORKS": "true",
    "CALLBACK_RETRY_BACKOFF_SECONDS": "0.5",
    "MAINTENANCE_INTERVAL_SECONDS": "1",
    # The catch-up round takes an event still pending delivery too (its webhook then counts as
    # a duplicate); off here, where the webhook outcomes are counted one by one.
    "STRIPE_EVENTS_CATCHUP_SECONDS": "0",
}


stack, api, stripe = module_stack("lifecycle", ENV, webhook_secret=WEBHOOK_SECRET)


def status_of(api: httpx.Client, payment_id: str, wanted: str, timeout: float = 30) -> Any:
    def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/payments/{payment_id}").json()
        return body if body["status"] == wanted else None

    return wait_until(reached, timeout=timeout, what=f"{payment_id} {wanted}")


def requires_action(api: httpx.Client, stripe: StripeAdmin) -> dict[str, Any]:
    customer = stripe.customer(card=THREE_D_SECURE_CARD)
    response = pay(api, customer, wait=20)
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "authentication_required"
    body: dict[str, Any] = api.get(f"/payments/{response.json()['error']['payment_id']}").json()
    assert body["status"] == "requires_action"
    return body


@pytest.mark.parametrize(("success", "ends"), [(True, "succeeded"), (False, "failed")])
def test_3ds_completed_or_failed_through_stripe_moves_the_payment(
    api: httpx.Client, stripe: StripeAdmin, success: bool, ends: str
) -> None:
    payment = requires_action(api, stripe)
    assert payment["next_action"]
    assert payment["client_secret"].startswith(payment["payment_intent"] + "_secret_")

    # What Stripe.js does in the customer's browser with the client secret.
    stripe.http.post(
        f"/v1/payment_intents/{payment['payment_intent']}/_authenticate",
        data={"client_secret": payment["client_secret"], "success": str(success).lower()},
    ).raise_for_status()

    # The emulator's signed webhook reaches the API, the task re-fetches the PaymentIntent.
    done = status_of(api, payment["id"], ends)
    assert "client_secret" not in done
    assert "next_action" not in done
    if success:
        assert done["confirmation"] == payment["payment_intent"]
        assert done["charge"].startswith("ch_")
        assert len(stripe.charges(payment["account_id"])) == 1
    else:
        assert done["error"]["type"] == "card_error"


def test_a_refund_made_in_stripes_dashboard_arrives_by_webhook(
    stack: Stack, api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    paid = pay(api, customer, amount="20.00", wait=20).json()
    assert paid["status"] == "succeeded"
    before = webhook_outcomes(api, "charge.refunded")

    # As in the dashboard: Stripe refunds, and its signed charge.refunded reaches the API.
    stripe.http.post("/v1/refunds", data={"charge": paid["charge"]}).raise_for_status()

    done = status_of(api, paid["id"], "refunded")
    assert done["amount_refunded"] == "20.00"
    listed = stripe.http.get("/v1/events", params={"type": "charge.refunded", "limit": 100})
    (event,) = [e for e in listed.json()["data"] if e["data"]["object"]["id"] == paid["charge"]]
    body = json.dumps(event).encode()
    signed = {"Stripe-Signature": stripe_signature(body, WEBHOOK_SECRET),
              "Content-Type": "application/json"}  # fmt: skip
    answers = [  # Stripe may deliver an event again: it is taken once
        httpx.post(f"{stack.api_url}/webhooks/stripe", content=body, headers=signed)
        for _ in range(2)
    ]

    assert [a.status_code for a in answers] == [200, 200]
    assert [a.json()["duplicate"] for a in answers] == [True, True]
    stack.wait_until_idle()  # every task given to the queue ran and was acknowledged
    after = webhook_outcomes(api, "charge.refunded")
    moved = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    # Applied once: a second run of the same event would count an "unchanged" as well.
    assert moved == {"received": 1, "duplicate": 2, "applied": 1}


def webhook_outcomes(api: httpx.Client, event_type: str) -> dict[str, float]:
    """What /metrics counts of Stripe's events of ``event_type``, by outcome."""
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(api.get("/metrics").text)
        for sample in family.samples
        if sample.name == "payments_stripe_webhooks_total" and sample.labels["type"] == event_type
    }


def test_a_forged_webhook_is_refused_and_moves_nothing(
    stack: Stack, api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    paid = pay(api, customer, wait=20).json()
    body = stripe_event("charge.dispute.created", {"id": "dp_1", "object": "dispute",
                                                    "charge": paid["charge"]})  # fmt: skip

    answer = httpx.post(
        f"{stack.api_url}/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": stripe_signature(body, "whsec_forged"),
                 "Content-Type": "application/json"},
    )  # fmt: skip

    assert answer.status_code == 400
    assert final(api, paid["id"])["status"] == "succeeded"


def refund(api: httpx.Client, payment_id: str, amount: str | None, wait: int = 20) -> Any:
    body = {} if amount is None else {"amount": amount}
    return api.post(f"/payments/{payment_id}/refunds", params={"wait": wait}, json=body)


def stripe_refunds(stripe: StripeAdmin, charge: str) -> list[dict[str, Any]]:
    page = stripe.http.get("/v1/refunds", params={"charge": charge, "limit": 100})
    page.raise_for_status()
    data: list[dict[str, Any]] = page.json()["data"]
    return data


def test_a_partial_then_a_full_refund_and_a_third_is_refused(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    paid = pay(api, customer, amount="42.99", wait=20).json()

    partial = refund(api, paid["id"], "10.00")
    rest = refund(api, paid["id"], None)
    third = refund(api, paid["id"], "0.01")

    assert (partial.status_code, partial.json()["status"]) == (200, "succeeded")
    assert (rest.status_code, rest.json()["amount"]) == (200, "32.99")
    assert third.status_code == 409
    assert third.json()["error"]["code"] == "payment_not_refundable"  # it is refunded now
    shown = api.get(f"/payments/{paid['id']}").json()
    assert shown["status"] == "refunded"
    assert shown["amount_refunded"] == "42.99"
    assert [r["amount"] for r in shown["refunds"]] == ["10.00", "32.99"]
    made = stripe_refunds(stripe, paid["charge"])
    assert sorted(r["amount"] for r in made) == [1000, 3299]
    assert {r["metadata"]["refund_id"] for r in made} == {r["id"] for r in shown["refunds"]}
    listed = api.get(f"/{customer}/payments").json()["data"]
    assert listed[0]["amount_refunded"] == "42.99"


FAULT_ENV = {
    **ENV,
    # A short lease and visibility timeout, so a killed worker's refund comes back quickly.
    "STRIPE_TIMEOUT_SECONDS": "5",
    "VISIBILITY_TIMEOUT_SECONDS": "25",
    "RESTORE_INTERVAL_SECONDS": "1",
}


def test_killing_a_worker_mid_refund_loses_and_doubles_nothing(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    import signal
    import time

    with (
        Stack.running(tmp_path_factory, "refund-kill", FAULT_ENV, workers=2) as stack,
        stack.api() as api,
        stack.stripe_admin() as stripe,
    ):
        customer = stripe.customer()
        paid = pay(api, customer, amount="30.00", wait=20).json()
        assert paid["status"] == "succeeded"
        stack.proxy(latency_ms=3000)
        refund_id = refund(api, paid["id"], "12.00", wait=0).json()["id"]

        def holder() -> str | None:
            for name in ("w1", "w2"):
                events = stack.worker_events(name)
                if any(e.get("event") == "refund.started" and e.get("refund_id") == refund_id
                       for e in events):  # fmt: skip
                    return name
            return None

        name = wait_until(holder, timeout=30, what="a worker started the refund")
        wait_until(
            lambda: any(e["path"] == "/v1/refunds" and e["method"] == "POST"
                        for e in stack.proxy_log()),
            timeout=30, what="the refund reached Stripe",
        )  # fmt: skip
        stack.signal_worker(name, signal.SIGKILL)
        killed_at = time.monotonic()
        stack.proxy(latency_ms=0)

        def done() -> dict[str, Any] | None:
            body: dict[str, Any] = api.get(f"/payments/{paid['id']}/refunds/{refund_id}").json()
            return body if body["status"] == "succeeded" else None

        finished = wait_until(done, timeout=180, what=f"{refund_id} succeeded")
        print(f"\n[refund] worker {name} SIGKILLed mid-refund; refunded once by the other in "
              f"{time.monotonic() - killed_at:.1f}s")  # fmt: skip
        made = stripe_refunds(stripe, paid["charge"])
        assert [r["amount"] for r in made] == [1200]
        assert finished["stripe_refund"] == made[0]["id"]
        shown = api.get(f"/payments/{paid['id']}").json()
        assert (shown["status"], shown["amount_refunded"]) == ("succeeded", "12.00")
        posts = [e for e in stack.proxy_log() if e["path"] == "/v1/refunds"
                 and e["method"] == "POST"]  # fmt: skip
        assert {p["idempotency_key"] for p in posts} == {f"{refund_id}:refund"}


def test_callbacks_arrive_signed_once_each_and_again_after_a_500(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    """A 3-D Secure payment, completed and then refunded: its client hears requires_action,
    succeeded, the refund and refunded, each signed, each retried after its first 500."""
    with CallbackReceiver({"client": callback_secret(api)}) as receiver:
        customer = stripe.customer(card=THREE_D_SECURE_CARD)
        response = api.post(
            "/payments?wait=20",
            json={"account_id": customer, "amount": "25.00", "callback_url": receiver.url},
        )
        payment_id = response.json()["error"]["payment_id"]
        payment = api.get(f"/payments/{payment_id}").json()
        stripe.http.post(
            f"/v1/payment_intents/{payment['payment_intent']}/_authenticate",
            data={"client_secret": payment["client_secret"], "success": "true"},
        ).raise_for_status()
        status_of(api, payment_id, "succeeded")
        assert refund(api, payment_id, None).json()["status"] == "succeeded"

        wanted = {"payment.requires_action", "payment.succeeded", "refund.succeeded",
                  "payment.refunded"}  # fmt: skip
        wait_until(lambda: wanted <= set(receiver.acknowledged()), timeout=60,
                   what=f"callbacks {sorted(wanted)} acknowledged")  # fmt: skip

    assert all(d["verified"] for d in receiver.deliveries)
    by_id: dict[str, list[int]] = {}
    for d in receiver.deliveries:
        by_id.setdefault(d["id"], []).append(d["status"])
    assert len(by_id) == 4  # one id per event
    assert all(statuses == [500, 200] for statuses in by_id.values()), by_id
    done = receiver.acknowledged()
    assert done["payment.succeeded"]["data"]["id"] == payment_id
    assert done["refund.succeeded"]["data"]["amount"] == "25.00"


def test_a_client_with_its_own_signing_secret_gets_callbacks_signed_with_it(
    stack: Stack, stripe: StripeAdmin
) -> None:
    """API_CLIENTS gives this client its own secret: its callbacks verify with that secret (the
    one the API shows it) and not with CALLBACK_SIGNING_SECRETS."""
    secrets_ = {"own": OWN_SECRET, "global": CALLBACK_SECRET}
    with (
        CallbackReceiver(secrets_, fail_first=False) as receiver,
        httpx.Client(base_url=stack.api_url, timeout=40,
                     headers={"Authorization": f"Bearer {OWN_KEY}"}) as own_api,
    ):  # fmt: skip
        assert callback_secret(own_api) == OWN_SECRET
        customer = stripe.customer()
        body = {"account_id": customer, "amount": "7.00", "callback_url": receiver.url}
        paid = own_api.post("/payments", params={"wait": 20}, json=body).json()
        assert paid["status"] == "succeeded"
        wait_until(lambda: receiver.acknowledged().get("payment.succeeded"), timeout=30,
                   what="the payment.succeeded callback")  # fmt: skip

    (delivery,) = receiver.deliveries
    assert delivery["data"]["id"] == paid["id"]
    assert delivery["verified_with"] == ["own"]  # its secret, not the global one


def test_a_dispute_opened_at_stripe_makes_the_payment_disputed_and_tells_its_client(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    """The customer's bank opens a dispute (the emulator's test helper): Stripe's signed
    charge.dispute.created reaches the API, the worker fetches the charge again, the payment
    becomes disputed and its client's payment.disputed callback arrives, signed."""
    with CallbackReceiver({"client": callback_secret(api)}, fail_first=False) as receiver:
        customer = stripe.customer()
        body = {"account_id": customer, "amount": "15.00", "callback_url": receiver.url}
        paid = api.post("/payments", params={"wait": 20}, json=body).json()
        assert paid["status"] == "succeeded"

        opened = stripe.http.post(f"/v1/charges/{paid['charge']}/_dispute")
        opened.raise_for_status()
        dispute = opened.json()
        assert dispute["charge"] == paid["charge"]
        assert stripe.http.get(f"/v1/disputes/{dispute['id']}").json()["id"] == dispute["id"]

        done = status_of(api, paid["id"], "disputed")
        wait_until(lambda: receiver.acknowledged().get("payment.disputed"), timeout=30,
                   what="the payment.disputed callback")  # fmt: skip

    assert done["amount"] == "15.00"
    told = receiver.acknowledged()["payment.disputed"]
    assert told["verified"]
    assert (told["data"]["id"], told["data"]["status"]) == (paid["id"], "disputed")
    assert sorted(d["type"] for d in receiver.deliveries) == [
        "payment.disputed", "payment.succeeded"
    ]  # fmt: skip
