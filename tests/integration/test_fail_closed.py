"""Scopes, keys and secrets that fail closed, on real processes (figures in
docs/RELIABILITY.md): a client without ``payments`` can neither pay (the accept fast path) nor
read a payment, one without ``metrics`` cannot read /metrics, the API will not start open by
accident, and one client's callbacks verify with its own secret only."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from devtools.processes import ROOT, api_argv, free_port
from tests.integration.callback_receiver import CallbackReceiver
from tests.integration.stack import Stack
from tests.support import StripeAdmin, callback_secret, wait_until

pytestmark = pytest.mark.integration

MASTER = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
KEYS = {name: f"{name}-key-{secrets.token_hex(8)}" for name in ("shop-a", "shop-b", "scraper")}
CLIENTS = [
    {"name": "shop-a", "keys": [KEYS["shop-a"]]},  # payments, the default scope
    {"name": "shop-b", "keys": [KEYS["shop-b"]], "scopes": ["payments"]},
    {"name": "scraper", "keys": [KEYS["scraper"]], "scopes": ["metrics"]},
]
ENV = {
    "API_CLIENTS": json.dumps(CLIENTS),
    "CALLBACK_SIGNING_SECRETS": MASTER,
    "CALLBACK_ALLOW_PRIVATE_NETWORKS": "true",  # the receiver listens on 127.0.0.1
    "STRIPE_MAX_RPS": "0",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack.running(tmp_path_factory, "fail-closed", ENV, workers=1, fault_proxy=False) as s:
        yield s


@pytest.fixture
def as_client(stack: Stack) -> Iterator[dict[str, httpx.Client]]:
    clients = {
        name: httpx.Client(base_url=stack.api_url, timeout=40,
                           headers={"Authorization": f"Bearer {key}"})
        for name, key in KEYS.items()
    }  # fmt: skip
    try:
        yield clients
    finally:
        for client in clients.values():
            client.close()


@pytest.fixture
def stripe(stack: Stack) -> Iterator[StripeAdmin]:
    with stack.stripe_admin() as admin:
        yield admin


def test_a_client_without_payments_can_neither_pay_nor_read_a_payment(
    as_client: dict[str, httpx.Client], stripe: StripeAdmin
) -> None:
    customer = stripe.customer()
    body = {"account_id": customer, "amount": "9.00"}
    refused = as_client["scraper"].post("/payments", json=body, headers={"Idempotency-Key": "o1"})
    paid = as_client["shop-a"].post("/payments", params={"wait": 20}, json=body).json()
    read = as_client["scraper"].get(f"/payments/{paid['id']}")
    refund = as_client["scraper"].post(f"/payments/{paid['id']}/refunds", json={})

    for answer in (refused, read, refund):
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "insufficient_scope"
    assert paid["status"] == "succeeded"
    assert "9.00" not in read.text
    # The refused accept queued nothing: the one charge is shop-a's.
    assert [c["amount"] for c in stripe.charges(customer)] == [900]
    print("\n[fail-closed] no `payments` scope: POST /payments (fast path), GET /payments/{id} "
          "and POST .../refunds answer 403 insufficient_scope; 1 charge, shop-a's")  # fmt: skip


def test_a_client_without_metrics_cannot_read_metrics(as_client: dict[str, httpx.Client]) -> None:
    refused = as_client["shop-a"].get("/metrics")
    allowed = as_client["scraper"].get("/metrics")

    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    assert "payments_client_requests_total" not in refused.text
    assert allowed.status_code == 200
    assert "payments_client_requests_total" in allowed.text


def test_a_callback_verifies_with_its_client_s_secret_only(
    stack: Stack, as_client: dict[str, httpx.Client], stripe: StripeAdmin
) -> None:
    """shop-a and shop-b each read their own secret from the API; shop-a's callback verifies
    with shop-a's secret, not with shop-b's, nor with the master that derives both."""
    own = {name: callback_secret(as_client[name]) for name in ("shop-a", "shop-b")}
    assert own["shop-a"] != own["shop-b"]
    assert MASTER not in own.values()
    with CallbackReceiver({"shop-a": own["shop-a"], "shop-b": own["shop-b"], "master": MASTER},
                          fail_first=False) as receiver:  # fmt: skip
        body = {"account_id": stripe.customer(), "amount": "4.00", "callback_url": receiver.url}
        paid = as_client["shop-a"].post("/payments", params={"wait": 20}, json=body).json()
        assert paid["status"] == "succeeded"
        wait_until(lambda: receiver.acknowledged().get("payment.succeeded"), timeout=30,
                   what="shop-a's payment.succeeded callback")  # fmt: skip

    (delivery,) = receiver.deliveries
    assert delivery["data"]["id"] == paid["id"]
    assert delivery["verified_with"] == ["shop-a"]
    print("\n[fail-closed] shop-a's callback verified with shop-a's secret; shop-b's secret and "
          "the master refused it")  # fmt: skip


def start_api(**env: str) -> subprocess.CompletedProcess[str]:
    """``uvicorn api.main:app`` with this environment (and no client key unless it says so),
    run until it exits: it must, by itself, before serving anything."""
    given = {**os.environ, "API_KEYS": "", "API_CLIENTS": "", "REDIS_URL": "redis://127.0.0.1:9/0",
             "ENVIRONMENT": "development", **env}  # fmt: skip
    return subprocess.run(api_argv(free_port()), cwd=ROOT, env=given, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("env", "refusal"),
    [
        ({"API_ALLOW_ANONYMOUS": "false"}, "API_KEYS or API_CLIENTS is required"),
        ({"API_ALLOW_ANONYMOUS": "true", "STRIPE_API_KEY": "sk_live_" + "x" * 24},
         "API_ALLOW_ANONYMOUS is refused with a live Stripe key"),
        ({"API_ALLOW_ANONYMOUS": "true", "STRIPE_API_KEY": "rk_live_" + "x" * 24},
         "API_ALLOW_ANONYMOUS is refused with a live Stripe key"),
        ({"API_ALLOW_ANONYMOUS": "true", "ENVIRONMENT": "production",
          "STRIPE_API_KEY": "sk_live_" + "x" * 24}, "API_ALLOW_ANONYMOUS is refused when"),
    ],
    ids=["no-key", "sk-live-open", "rk-live-open", "production-open"],
)  # fmt: skip
def test_the_api_will_not_start_open_by_accident(env: dict[str, str], refusal: str) -> None:
    started = time.monotonic()
    exited = start_api(**env)
    took = time.monotonic() - started

    assert exited.returncode != 0
    assert refusal in exited.stderr, exited.stderr[-2000:]
    assert "x" * 24 not in exited.stderr + exited.stdout  # the key is never shown
    print(f"\n[fail-closed] {refusal!r}: exit {exited.returncode} after {took:.1f} s")
