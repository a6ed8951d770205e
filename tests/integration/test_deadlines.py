"""Deadlines and cancel on real processes (figures in docs/RELIABILITY.md).

Under a Stripe budget of 10 calls/s (5 charges/s: each reads the customer, then makes its
PaymentIntent), 500 payments are queued at once with a 10 s deadline, and one of the last is
canceled. About a tenth can be charged in time: every other one must end ``expired`` with no
PaymentIntent on the customer, the canceled one too, and each charged one has exactly one.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest

from devtools.demo import create_test_customer
from tests.integration.stack import Stack
from tests.support import stripe_admin_http, wait_until

pytestmark = pytest.mark.integration

PAYMENTS = 500
DEADLINE_SECONDS = 10
LOOKAHEAD_SECONDS = 2.0
ENV = {
    "STRIPE_MAX_RPS": "10",
    "STRIPE_BUDGET_LOOKAHEAD_SECONDS": str(LOOKAHEAD_SECONDS),
    "CLIENT_MAX_RPS": "0",
    "WORKER_CONCURRENCY": "32",
    "MAINTENANCE_INTERVAL_SECONDS": "1",
    "LOG_LEVEL": "INFO",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack.running(tmp_path_factory, "deadlines", ENV, workers=1, fault_proxy=False) as s:
        yield s


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _intents(stack: Stack, customer: str) -> list[dict[str, Any]]:
    """Every PaymentIntent of the customer at the emulator, page by page."""
    found: list[dict[str, Any]] = []
    with stripe_admin_http(stack.emulator_url) as http:
        after: str | None = None
        while True:
            params: dict[str, Any] = {"customer": customer, "limit": 100}
            if after:
                params["starting_after"] = after
            page = http.get("/v1/payment_intents", params=params).raise_for_status().json()
            found.extend(page["data"])
            if not page["has_more"]:
                return found
            after = page["data"][-1]["id"]


def test_queued_payments_past_their_deadline_expire_uncharged(stack: Stack) -> None:
    with stripe_admin_http(stack.emulator_url) as http:
        customer = create_test_customer(http)

    def send(keys: range) -> list[dict[str, Any]]:
        with stack.api() as api:
            answers = []
            for n in keys:
                answer = api.post("/payments", headers={"Idempotency-Key": f"deadline-{n}"},
                                  json={"account_id": customer, "amount": "1.00",
                                        "expires_in": DEADLINE_SECONDS})  # fmt: skip
                assert answer.status_code == 202, answer.text
                answers.append(answer.json())
            return answers

    with ThreadPoolExecutor(8) as pool:
        accepted = [p for chunk in pool.map(send, [range(i, PAYMENTS, 8) for i in range(8)])
                    for p in chunk]  # fmt: skip
    by_id = {p["id"]: p for p in accepted}
    assert len(by_id) == PAYMENTS
    # A late one says where it stands: hundreds before it, charged in tens of seconds.
    last = max(accepted, key=lambda p: p["queue"]["ahead"])
    assert last["queue"]["ahead"] > PAYMENTS / 2
    assert last["queue"]["estimate"] is True

    with stack.api() as api:
        canceled = api.post(f"/payments/{last['id']}/cancel")
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "canceled"
        standing = api.get(f"/payments/{accepted[-1]['id']}").json()
        if standing["status"] == "queued":
            assert standing["queue"]["ahead"] >= 0

        # Every payment ends well before the backlog could have been charged (about 100 s at
        # 5 charges a second): the deadlines round expires the ones still queued.
        def settled() -> dict[str, dict[str, Any]] | None:
            now = {p: api.get(f"/payments/{p}").json() for p in by_id}
            waiting = [b for b in now.values() if b["status"] in ("queued", "processing")]
            return None if waiting else now

        final = wait_until(settled, timeout=DEADLINE_SECONDS + 60, what="every payment final")

    statuses = Counter(body["status"] for body in final.values())
    print(f"deadlines: {dict(statuses)}")  # the figures in docs/RELIABILITY.md
    assert set(statuses) <= {"succeeded", "expired", "canceled"}, statuses
    assert statuses["canceled"] == 1
    assert statuses["expired"] > PAYMENTS / 2, statuses
    assert statuses["succeeded"] > 0, statuses

    intents = Counter(pi["metadata"]["payment_id"] for pi in _intents(stack, customer))
    for payment_id, body in final.items():
        if body["status"] == "succeeded":
            assert intents[payment_id] == 1, body
            assert body["payment_intent"]
        else:
            assert intents[payment_id] == 0, body
            assert body["error"]["code"] == f"payment_{body['status']}"
            assert "never sent to Stripe" in body["error"]["message"]
    assert sum(intents.values()) == statuses["succeeded"]

    deadline = {p: _epoch(b["expires_at"]) for p, b in final.items()}
    # Its create was sent before its deadline, whatever its wait for the budget (Stripe's
    # `created` is in whole seconds, stamped as the emulator receives it: a second's slack).
    for pi in _intents(stack, customer):
        assert pi["created"] <= deadline[pi["metadata"]["payment_id"]] + 1
    # A charge never comes after an expiry: nothing is left to send.
    time.sleep(2)
    assert len(_intents(stack, customer)) == statuses["succeeded"]
