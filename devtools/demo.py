"""`make demo`: make a test customer on the Stripe emulator and pay 42.99 through the API.

Needs `make run` running (or any API whose Stripe is the emulator: ``API_URL``, ``API_KEY``,
``STRIPE_API_BASE``). Prints each call to the API as the curl command that repeats it, and keeps
the customer's id in .run/demo-customer (.run/demo-customer-declined with ``--decline``).

``--decline`` (``make demo DECLINE=1``) gives the customer a card that attaches but is declined
on every charge (the emulator's ``pm_card_chargeCustomerFail``), so the payment ends in a 402.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

API = os.environ.get("API_URL", "http://127.0.0.1:8080")
STRIPE = os.environ.get("STRIPE_API_BASE", "http://127.0.0.1:8420")
EMULATOR_KEY = "sk_test_emulator"
RUN_DIR = Path(__file__).resolve().parent.parent / ".run"
KEY_FILE = RUN_DIR / "api-key"

GOOD_CARD = "pm_card_visa"
# Attaches like any card; every charge on it is declined (card_declined).
DECLINING_CARD = "pm_card_chargeCustomerFail"


def client_key() -> str:
    """API_KEY from the environment, else the one `make run` wrote."""
    key = os.environ.get("API_KEY")
    if key:
        return key
    return KEY_FILE.read_text().strip() if KEY_FILE.exists() else ""


def create_test_customer(stripe: httpx.Client, card: str = GOOD_CARD) -> str:
    """A customer with ``card`` attached and set as its default payment method."""
    customer: str = stripe.post("/v1/customers", data={"email": "demo@example.com"}).json()["id"]
    method = stripe.post(f"/v1/payment_methods/{card}/attach", data={"customer": customer})
    stripe.post(
        f"/v1/customers/{customer}",
        data={"invoice_settings[default_payment_method]": method.json()["id"]},
    ).raise_for_status()
    return customer


def run_demo(
    stripe: httpx.Client,
    api: httpx.Client,
    *,
    decline: bool = False,
    run_dir: Path = RUN_DIR,
) -> int:
    """Make the customer, pay, list; 0 when the payment ended as intended (200, or 402)."""
    card = DECLINING_CARD if decline else GOOD_CARD
    try:
        customer = create_test_customer(stripe, card)
    except httpx.HTTPError as exc:
        print(
            f"The Stripe emulator at {stripe.base_url} did not answer ({exc}); "
            "is `make run` running?"
        )
        return 1
    # The last customer made, for the README's curl (and the declining card's apart).
    kept = run_dir / ("demo-customer-declined" if decline else "demo-customer")
    run_dir.mkdir(parents=True, exist_ok=True)
    kept.write_text(customer + "\n")
    print(f"Test customer on the emulator: {customer} (card {card} as default; in {kept})\n")
    body = {"account_id": customer, "amount": "42.99"}
    auth_header = (
        '-H "Authorization: Bearer $API_KEY"'
        if os.environ.get("API_KEY")
        else f'-H "Authorization: Bearer $(cat {KEY_FILE})"'
    )
    print(
        f"$ curl -s -X POST '{api.base_url}/payments?wait=10' {auth_header} "
        f"-H 'Content-Type: application/json' -H 'Idempotency-Key: demo-{customer}' "
        f"-d '{json.dumps(body)}'"
    )
    paid = api.post(
        "/payments",
        params={"wait": 10},
        json=body,
        headers={"Idempotency-Key": f"demo-{customer}"},
    )
    print(f"HTTP {paid.status_code}\n{json.dumps(paid.json(), indent=2)}\n")
    if paid.status_code != 200:
        print(
            "(Not listed: a client lists a customer's charges once a payment of its own for "
            "that customer has succeeded; before that, the list is a 404.)"
        )
        return 0 if decline and paid.status_code == 402 else 1
    print(f"$ curl -s {auth_header} '{api.base_url}/{customer}/payments'")
    listed = api.get(f"/{customer}/payments")
    print(f"HTTP {listed.status_code}\n{json.dumps(listed.json(), indent=2)}")
    return 0 if paid.status_code == (402 if decline else 200) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--decline",
        action="store_true",
        default=os.environ.get("DECLINE", "") not in ("", "0"),
        help=f"give the customer a declining card ({DECLINING_CARD}): the payment ends in a 402",
    )
    args = parser.parse_args(argv)
    stripe_auth = {"Authorization": f"Bearer {EMULATOR_KEY}"}
    api_auth = {"Authorization": f"Bearer {client_key()}"}
    with (
        httpx.Client(base_url=STRIPE, headers=stripe_auth, timeout=10) as stripe,
        httpx.Client(base_url=API, headers=api_auth, timeout=40) as api,
    ):
        return run_demo(stripe, api, decline=args.decline)


if __name__ == "__main__":
    sys.exit(main())
