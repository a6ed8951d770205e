"""The core payment path end to end, as a client sees it, against real processes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from devtools.processes import ProcessGroup
from tests.support import AUTH, CLIENT_KEY, SERVICE_STRIPE_KEY, StripeAdmin, final, pay

pytestmark = pytest.mark.integration


def test_a_payment_is_charged_and_confirmed_when_the_client_waits(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()

    response = pay(api, customer, wait=30)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["confirmation"].startswith("pi_")
    (charge,) = stripe.charges(customer)
    assert charge["amount"] == 4299
    assert charge["currency"] == "usd"
    assert charge["payment_intent"] == body["payment_intent"]
    assert charge["id"] == body["charge"]


def test_an_accepted_payment_can_be_polled_to_its_outcome(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()

    accepted = pay(api, customer, amount="10.00")

    assert accepted.status_code == 202
    assert accepted.json()["status"] in ("queued", "processing", "succeeded")
    outcome = final(api, accepted.json()["id"])
    assert outcome["status"] == "succeeded"
    assert [c["amount"] for c in stripe.charges(customer)] == [1000]


def test_a_declined_card_fails_the_payment_with_a_402(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer(card="pm_card_chargeCustomerFail")

    response = pay(api, customer, wait=30)

    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "card_declined"
    assert error["type"] == "card_error"
    polled = api.get(f"/payments/{error['payment_id']}").json()
    assert polled["status"] == "failed"
    assert polled["error"]["code"] == "card_declined"


def test_an_unknown_customer_fails_the_payment_with_a_404(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    response = pay(api, "cus_DoesNotExist1", wait=30)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "customer_not_found"


def test_a_customer_without_a_payment_method_gets_a_clear_402(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer(card=None)

    response = pay(api, customer, wait=30)

    assert response.status_code == 402
    assert response.json()["error"]["code"] == "payment_method_missing"
    assert stripe.charges(customer) == []


def test_a_replayed_request_returns_the_same_payment_and_charges_once(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    headers = {"Idempotency-Key": f"order-{customer}"}

    first = pay(api, customer, headers=headers, wait=30)
    again = pay(api, customer, headers=headers, wait=30)

    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(stripe.charges(customer)) == 1


def test_a_reused_key_with_another_amount_is_refused(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    headers = {"Idempotency-Key": f"order-{customer}"}

    pay(api, customer, headers=headers, wait=30)
    other = pay(api, customer, amount="99.00", headers=headers)

    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert [c["amount"] for c in stripe.charges(customer)] == [4299]


def test_forty_concurrent_requests_with_one_key_make_one_charge(
    api_url: str, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    headers = {"Idempotency-Key": f"burst-{customer}"}

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=api_url, timeout=40, headers=AUTH) as client:
            return pay(client, customer, headers=headers)

    with ThreadPoolExecutor(max_workers=40) as pool:
        responses = list(pool.map(send, range(40)))

    assert {r.status_code for r in responses} <= {200, 202}
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    with httpx.Client(base_url=api_url, timeout=40, headers=AUTH) as client:
        assert final(client, ids.pop())["status"] == "succeeded"
    assert len(stripe.charges(customer)) == 1


def test_a_customers_payments_are_listed_newest_first_in_pages(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    for amount in ("1.00", "2.00", "3.00"):
        assert pay(api, customer, amount=amount, wait=30).status_code == 200

    first = api.get(f"/{customer}/payments", params={"limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert [c["amount"] for c in page["data"]] == ["3.00", "2.00"]
    assert all(c["payment_id"].startswith("pay_") for c in page["data"])
    assert page["has_more"] is True
    assert page["next_cursor"] == page["data"][-1]["id"]

    second = api.get(
        f"/{customer}/payments", params={"limit": 2, "starting_after": page["next_cursor"]}
    ).json()
    assert [c["amount"] for c in second["data"]] == ["1.00"]
    assert second["has_more"] is False
    assert second["next_cursor"] is None


def test_listing_an_unknown_customer_is_a_404(api: httpx.Client, stripe: StripeAdmin) -> None:
    response = api.get("/cus_DoesNotExist2/payments")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "customer_not_found"
    assert response.json()["error"]["param"] == "customer_id"


def test_readiness_reports_redis(api: httpx.Client) -> None:
    assert api.get("/readyz").status_code == 200
    assert api.get("/healthz").json() == {"status": "ok"}


def test_without_a_key_nothing_is_charged_or_read(api_url: str, stripe: StripeAdmin) -> None:
    customer = stripe.customer()
    with httpx.Client(base_url=api_url, timeout=10) as anonymous:
        assert (
            anonymous.post("/payments", json={"account_id": customer, "amount": "5.00"}).status_code
            == 401
        )
        assert anonymous.get(f"/{customer}/payments").status_code == 401
        assert anonymous.get("/readyz").status_code == 200
    assert stripe.charges(customer) == []


def test_logs_hold_no_secret_and_no_card_number(
    api: httpx.Client, stripe: StripeAdmin, processes: ProcessGroup
) -> None:
    customer = stripe.customer()
    paid = pay(api, customer, wait=30)
    assert paid.status_code == 200

    logs = "".join(p.read_text(errors="replace") for p in processes.log_dir.glob("*.log"))
    assert paid.json()["id"] in logs  # the logs are there, and they are about this payment
    for secret in (SERVICE_STRIPE_KEY, CLIENT_KEY, "4242424242424242"):
        assert secret not in logs
