"""`make demo`: make a test customer on the Stripe emulator and pay 42.99 through the API.

Needs `make run` running. Prints each step as the curl command a person would type.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx

API = os.environ.get("API_URL", "http://127.0.0.1:8080")
STRIPE = os.environ.get("STRIPE_API_BASE", "http://127.0.0.1:8420")
EMULATOR_KEY = "sk_test_emulator"
KEY_FILE = Path(__file__).resolve().parent.parent / ".run" / "api-key"


def client_key() -> str:
    """API_KEY from the environment, else the one `make run` wrote."""
    key = os.environ.get("API_KEY")
    if key:
        return key
    return KEY_FILE.read_text().strip() if KEY_FILE.exists() else ""


def create_test_customer(stripe: httpx.Client, card: str = "pm_card_visa") -> str:
    """A customer with ``card`` attached and set as its default payment method."""
    customer: str = stripe.post("/v1/customers", data={"email": "demo@example.com"}).json()["id"]
    method = stripe.post(f"/v1/payment_methods/{card}/attach", data={"customer": customer})
    stripe.post(
        f"/v1/customers/{customer}",
        data={"invoice_settings[default_payment_method]": method.json()["id"]},
    ).raise_for_status()
    return customer


def main() -> int:
    headers = {"Authorization": f"Bearer {EMULATOR_KEY}"}
    try:
        with httpx.Client(base_url=STRIPE, headers=headers, timeout=10) as stripe:
            customer = create_test_customer(stripe)
    except httpx.HTTPError as exc:
        print(f"The Stripe emulator at {STRIPE} did not answer ({exc}); is `make run` running?")
        return 1
    print(f"Test customer on the emulator: {customer} (card pm_card_visa as default)\n")
    body = {"account_id": customer, "amount": "42.99"}
    auth_header = f'-H "Authorization: Bearer $(cat {KEY_FILE})"'
    print(
        f"$ curl -s -X POST '{API}/payments?wait=10' {auth_header} "
        f"-H 'Content-Type: application/json' -H 'Idempotency-Key: demo-{customer}' "
        f"-d '{json.dumps(body)}'"
    )
    auth = {"Authorization": f"Bearer {client_key()}"}
    with httpx.Client(base_url=API, timeout=40, headers=auth) as api:
        paid = api.post(
            "/payments",
            params={"wait": 10},
            json=body,
            headers={"Idempotency-Key": f"demo-{customer}"},
        )
        print(f"HTTP {paid.status_code}\n{json.dumps(paid.json(), indent=2)}\n")
        print(f"$ curl -s {auth_header} '{API}/{customer}/payments'")
        listed = api.get(f"/{customer}/payments")
        print(f"HTTP {listed.status_code}\n{json.dumps(listed.json(), indent=2)}")
    return 0 if paid.status_code == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
