"""A payment's life after its first answer, on real processes: Stripe's signed webhooks (sent
by the emulator, or made here as Stripe would send them), 3-D Secure completed through the
emulator's ``_authenticate``, refunds and signed callbacks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devtools.stripe_emulator import THREE_D_SECURE_CARD, register_webhook_endpoint
from tests.integration.stack import Stack, final, pay
from tests.support import (
    WEBHOOK_SECRET,
    StripeAdmin,
    stripe_event,
    stripe_signature,
    wait_until,
)

pytestmark = pytest.mark.integration

ENV = {
    "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "STRIPE_MAX_RPS": "0",
    "CHARGE_RETRY_BACKOFF_SECONDS": "0.2",
    "CHARGE_RETRY_BACKOFF_MAX_SECONDS": "2",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack.running(tmp_path_factory, "lifecycle", ENV, workers=1, fault_proxy=False) as s:
        register_webhook_endpoint(s.emulator_url, f"{s.api_url}/webhooks/stripe", WEBHOOK_SECRET)
        yield s


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with stack.api() as client:
        yield client


@pytest.fixture
def stripe(stack: Stack) -> Iterator[StripeAdmin]:
    with stack.stripe_admin() as admin:
        yield admin


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
    stripe.http.post("/v1/refunds", data={"charge": paid["charge"]}).raise_for_status()
    charge = stripe.http.get(f"/v1/charges/{paid['charge']}").json()
    # The emulator sends no charge.refunded: send it as Stripe would.
    body = stripe_event("charge.refunded", charge)
    signature = stripe_signature(body, WEBHOOK_SECRET)

    for _ in range(2):  # Stripe may deliver an event twice: it is taken once
        answer = httpx.post(
            f"{stack.api_url}/webhooks/stripe",
            content=body,
            headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
        )
        assert answer.status_code == 200

    done = status_of(api, paid["id"], "refunded")
    assert done["amount_refunded"] == "20.00"


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
