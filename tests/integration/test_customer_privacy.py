"""A customer's charges are private to the clients that own them, against real processes (Redis,
the Stripe emulator, a Celery worker, the API) with two clients in API_CLIENTS: a payment that
fails gives no right to list the customer's charges, a client that may list them sees only its
own, page by page, and with CUSTOMER_OWNER_METADATA_KEY another client's customer is never
charged (figures in docs/RELIABILITY.md)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest

from tests.integration.stack import Stack
from tests.support import StripeAdmin, pay, stripe_admin_http

pytestmark = pytest.mark.integration

A, B, OPS = "shop-a-key", "shop-b-key", "ops-key"


def digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


CLIENTS = [
    {"name": "shop-a", "keys": [digest(A)]},
    {"name": "shop-b", "keys": [digest(B)]},
    {"name": "ops", "keys": [digest(OPS)], "scopes": ["admin"]},
]


def api_as(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.api_url, timeout=40,
                        headers={"Authorization": f"Bearer {key}"})  # fmt: skip


def walk(api: httpx.Client, customer: str, limit: int) -> list[dict[str, Any]]:
    """Every page of the customer's list, following next_cursor."""
    pages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        answer = api.get(f"/{customer}/payments", params=params)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        if not pages[-1]["has_more"]:
            return pages
        params["starting_after"] = pages[-1]["next_cursor"]
        assert len(pages) < 20


def listed(pages: list[dict[str, Any]]) -> list[str]:
    return [charge["payment_id"] for page in pages for charge in page["data"]]


def stack_env(**extra: str) -> dict[str, str]:
    return {"API_CLIENTS": json.dumps(CLIENTS), "LOG_LEVEL": "INFO", **extra}


def test_a_failed_payment_for_another_client_s_customer_shows_none_of_its_charges(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with Stack.running(tmp_path_factory, "privacy", stack_env(), workers=1,
                       fault_proxy=False) as stack:  # fmt: skip
        with stack.stripe_admin() as admin:
            customer = admin.customer()  # client B's customer
        with (
            stripe_admin_http(stack.emulator_url) as http,
            api_as(stack, A) as a,
            api_as(stack, B) as b,
            api_as(stack, OPS) as ops,
        ):
            stripe = StripeAdmin(http)
            b_paid = [pay(b, customer, amount, wait=20) for amount in ("11.00", "12.00", "13.00")]
            assert [p.status_code for p in b_paid] == [200, 200, 200]
            b_ids = [p.json()["id"] for p in reversed(b_paid)]  # newest first, as listed

            # A's probe: B's customer with a payment method that does not exist.
            probe = a.post("/payments", params={"wait": 20},
                           json={"account_id": customer, "amount": "1.00",
                                 "payment_method": "pm_DoesNotExist1"})  # fmt: skip
            charges_after_probe = len(stripe.charges(customer))
            a_refused = a.get(f"/{customer}/payments")
            unknown = a.get("/cus_NeverMade1/payments")

            # B still sees its own, page by page.
            b_pages = walk(b, customer, limit=2)

            # Without ownership metadata A may still charge the customer's card; once that
            # succeeds A lists the customer, and sees its own charge only.
            a_paid = pay(a, customer, "21.00", wait=20)
            a_pages = walk(a, customer, limit=1)
            b_after = walk(b, customer, limit=2)
            everyone = walk(ops, customer, limit=100)
            charges = stripe.charges(customer)

    assert probe.status_code == 400  # failed: the answer is its error
    assert probe.json()["error"]["code"] == "payment_method_not_found"
    assert charges_after_probe == 3  # not charged
    # The same answer as for a customer that does not exist: nothing to probe.
    assert a_refused.status_code == unknown.status_code == 404
    assert a_refused.json()["error"]["code"] == unknown.json()["error"]["code"]
    assert a_refused.json()["error"]["code"] == "customer_not_found"
    assert listed(b_pages) == b_ids
    assert [len(page["data"]) for page in b_pages] == [2, 1]

    assert a_paid.status_code == 200
    assert listed(a_pages) == [a_paid.json()["id"]]
    assert listed(b_after) == b_ids  # A's charge is not B's to see
    assert listed(everyone) == [a_paid.json()["id"], *b_ids]
    assert {c["metadata"]["client"] for c in charges} == {"shop-a", "shop-b"}
    print(
        f"\n[privacy] A's probe with a payment method that does not exist: "
        f"{probe.status_code} {probe.json()['error']['code']}, charges on the customer "
        f"{charges_after_probe} (B's 3); A's list: {a_refused.status_code}; B's list: "
        f"{len(listed(b_pages))} of its charges over {len(b_pages)} pages (limit 2); after a "
        f"succeeded payment of A: A lists {len(listed(a_pages))} of the customer's "
        f"{len(listed(everyone))} charges, B {len(listed(b_after))}"
    )


def test_with_owner_metadata_another_client_s_customer_is_never_charged(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = stack_env(CUSTOMER_OWNER_METADATA_KEY="owner")
    with Stack.running(tmp_path_factory, "owner", env, workers=1, fault_proxy=False) as stack:
        with stack.stripe_admin() as admin:
            owned = admin.customer()
            unowned = admin.customer()
            admin.http.post(f"/v1/customers/{owned}",
                            data={"metadata[owner]": "shop-b"}).raise_for_status()  # fmt: skip
            method = admin.http.get(f"/v1/customers/{owned}").json()["invoice_settings"][
                "default_payment_method"
            ]
        with (
            stripe_admin_http(stack.emulator_url) as http,
            api_as(stack, A) as a,
            api_as(stack, B) as b,
        ):
            stripe = StripeAdmin(http)
            by_default = pay(a, owned, "5.00", wait=20)
            with_method = a.post("/payments", params={"wait": 20},
                                 json={"account_id": owned, "amount": "6.00",
                                       "payment_method": method})  # fmt: skip
            polled = a.get(f"/payments/{by_default.json()['error']['payment_id']}").json()
            charges_after_refusals = len(stripe.charges(owned))
            a_list = a.get(f"/{owned}/payments")
            owner_pays = pay(b, owned, "7.00", wait=20)
            anyone_pays = pay(a, unowned, "8.00", wait=20)

    for refused in (by_default, with_method):
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "customer_not_owned"
        assert "not charged" in refused.json()["error"]["message"]
    assert polled["status"] == "failed"
    assert polled["error"]["code"] == "customer_not_owned"
    assert charges_after_refusals == 0
    assert a_list.status_code == 404
    assert owner_pays.status_code == 200
    assert anyone_pays.status_code == 200  # a customer no client owns stays open
    print(
        f"\n[privacy] CUSTOMER_OWNER_METADATA_KEY=owner, customer owned by shop-b: shop-a's "
        f"payments {by_default.status_code} and {with_method.status_code} (payment method "
        f"given) customer_not_owned, {charges_after_refusals} charges made; shop-b's "
        f"{owner_pays.status_code}; shop-a on a customer nobody owns {anyone_pays.status_code}"
    )
