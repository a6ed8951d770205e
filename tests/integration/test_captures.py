"""Authorize now, capture later, on real processes (API, workers, Redis, the emulator with its
signed webhooks): a partial capture, a void, and an authorization Stripe releases after 7 days
(the emulator's ``_expire_authorization``) arriving by webhook."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.stack import module_stack
from tests.support import WEBHOOK_SECRET, StripeAdmin, wait_until

pytestmark = pytest.mark.integration

ENV = {
    "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "STRIPE_MAX_RPS": "0",
    "MAINTENANCE_INTERVAL_SECONDS": "1",
    "STRIPE_EVENTS_CATCHUP_SECONDS": "0",
}


stack, api, stripe = module_stack("captures", ENV, webhook_secret=WEBHOOK_SECRET)


def authorize(api: httpx.Client, stripe: StripeAdmin) -> dict[str, Any]:
    customer = stripe.customer()
    answer = api.post(
        "/payments",
        json={"account_id": customer, "amount": "42.99", "capture_method": "manual"},
        params={"wait": 20},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert (body["status"], body["capture_method"]) == ("requires_capture", "manual")
    return body


def status_of(api: httpx.Client, payment_id: str, wanted: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/payments/{payment_id}").json()
        return body if body["status"] == wanted else None

    return wait_until(reached, timeout=30, what=f"{payment_id} {wanted}")


def intent(stripe: StripeAdmin, payment: dict[str, Any]) -> dict[str, Any]:
    answer = stripe.http.get(f"/v1/payment_intents/{payment['payment_intent']}")
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    return body


def test_a_partial_capture_takes_30_of_42_99_and_refunds_come_out_of_it(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    held = authorize(api, stripe)
    assert intent(stripe, held)["amount_capturable"] == 4299

    captured = api.post(f"/payments/{held['id']}/capture", json={"amount": "30.00"},
                        params={"wait": 20})  # fmt: skip

    assert captured.status_code == 200, captured.text
    body = captured.json()
    assert (body["status"], body["amount_captured"]) == ("succeeded", "30.00")
    assert body["capture"] == {"action": "capture", "status": "succeeded", "amount": "30.00"}
    at_stripe = intent(stripe, held)
    assert (at_stripe["status"], at_stripe["amount_received"]) == ("succeeded", 3000)

    too_much = api.post(f"/payments/{held['id']}/refunds", json={"amount": "30.01"})
    assert too_much.status_code == 409
    refund = api.post(f"/payments/{held['id']}/refunds", params={"wait": 20}, json={})
    assert refund.status_code == 200, refund.text
    assert refund.json()["amount"] == "30.00"
    assert status_of(api, held["id"], "refunded")["amount_refunded"] == "30.00"


def test_a_void_releases_the_authorization_and_captures_nothing(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    held = authorize(api, stripe)

    voided = api.post(f"/payments/{held['id']}/cancel", params={"wait": 20})

    assert voided.status_code == 200, voided.text
    body = voided.json()
    assert body["status"] == "canceled"
    assert body["capture"] == {"action": "void", "status": "succeeded"}
    assert "amount_captured" not in body
    at_stripe = intent(stripe, held)
    assert (at_stripe["status"], at_stripe["amount_received"]) == ("canceled", 0)
    late = api.post(f"/payments/{held['id']}/capture")
    assert late.status_code == 409


def test_an_authorization_stripe_releases_after_7_days_arrives_by_webhook_as_canceled(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    held = authorize(api, stripe)

    # What Stripe does to an authorization left uncaptured for 7 days.
    stripe.http.post(
        f"/v1/payment_intents/{held['payment_intent']}/_expire_authorization"
    ).raise_for_status()

    done = status_of(api, held["id"], "canceled")
    assert done["cancellation_reason"] == "automatic"
    assert "amount_captured" not in done
    late = api.post(f"/payments/{held['id']}/capture")
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "payment_not_capturable"
