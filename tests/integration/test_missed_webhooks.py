"""Missed webhooks, on real processes: the webhook endpoint fails while a refund is made in
Stripe's dashboard and a customer completes 3-D Secure; Stripe gives up on those deliveries and
never sends them again. The catch-up round (``worker/event_catchup.py``) lists Stripe's
undelivered events and takes each as its webhook would have been, once.

The endpoint fails as it does behind a failing load balancer: the fault proxy sits between the
emulator's webhook deliveries and the API and answers 500 on ``/webhooks/stripe`` until it is
reset. The emulator keeps each delivery's outcome, as Stripe does, for ``GET /v1/events``'s
``delivery_success``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.processes import free_port, python_module, wait_for_port
from devtools.stripe_emulator import THREE_D_SECURE_CARD, register_webhook_endpoint
from tests.integration.stack import Stack, pay
from tests.support import WEBHOOK_SECRET, wait_until

pytestmark = pytest.mark.integration

CATCHUP_SECONDS = 6
ENV = {
    "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "MAINTENANCE_INTERVAL_SECONDS": "1",
    "STRIPE_EVENTS_CATCHUP_SECONDS": str(CATCHUP_SECONDS),
}
WEBHOOK_PATH = "/webhooks/stripe"


class LoadBalancer:
    """The fault proxy in front of the API's webhook endpoint."""

    def __init__(self, stack: Stack) -> None:
        port = free_port()
        proc = stack.group.start(
            "webhook-lb",
            python_module("tests.fault_proxy", "--upstream", stack.api_url, "--port", str(port)),
        )
        wait_for_port(port, proc=proc)
        self.url = f"http://127.0.0.1:{port}"

    def fail_everything(self) -> None:
        fail = [{"status": 500, "path": WEBHOOK_PATH, "count": 1000}]
        httpx.post(f"{self.url}/_proxy/config", json={"fail": fail}).raise_for_status()

    def recover(self) -> None:
        httpx.post(f"{self.url}/_proxy/reset", json={}).raise_for_status()

    def deliveries(self) -> list[str]:
        """The outcome of each webhook delivery through it, oldest first."""
        log: list[dict[str, Any]] = httpx.get(f"{self.url}/_proxy/log").json()
        return [e.get("outcome", "") for e in log if e["path"] == WEBHOOK_PATH]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, LoadBalancer]]:
    with Stack.running(tmp_path_factory, "missed-webhooks", ENV, workers=1,
                       fault_proxy=False) as s:  # fmt: skip
        balancer = LoadBalancer(s)
        register_webhook_endpoint(s.emulator_url, balancer.url + WEBHOOK_PATH, WEBHOOK_SECRET)
        yield s, balancer


def webhook_counts(api: httpx.Client) -> dict[tuple[str, str], float]:
    """/metrics' payments_stripe_webhooks_total by (type, outcome)."""
    return {
        (sample.labels["type"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(api.get("/metrics").text)
        for sample in family.samples
        if sample.name == "payments_stripe_webhooks_total"
    }


def payment(api: httpx.Client, payment_id: str) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/payments/{payment_id}").json()
    return body


def test_events_whose_webhooks_failed_are_caught_up_within_one_period_and_applied_once(
    stack: tuple[Stack, LoadBalancer],
) -> None:
    s, balancer = stack
    with s.api() as api, s.stripe_admin() as stripe:
        paid = pay(api, stripe.customer(), amount="20.00", wait=20).json()
        assert paid["status"] == "succeeded"
        waiting = pay(api, stripe.customer(card=THREE_D_SECURE_CARD), wait=20).json()
        assert waiting["error"]["code"] == "authentication_required"
        waiting = payment(api, waiting["error"]["payment_id"])
        assert waiting["status"] == "requires_action"
        # The first payment's own event reached the API while the endpoint was up.
        wait_until(lambda: "forwarded 200" in balancer.deliveries(), timeout=30,
                   what="a webhook delivered")  # fmt: skip
        s.wait_until_idle()
        before = webhook_counts(api)

        balancer.fail_everything()
        # Stripe's dashboard refunds the first payment; the customer completes 3-D Secure.
        stripe.http.post("/v1/refunds", data={"charge": paid["charge"]}).raise_for_status()
        stripe.http.post(
            f"/v1/payment_intents/{waiting['payment_intent']}/_authenticate",
            data={"client_secret": waiting["client_secret"], "success": "true"},
        ).raise_for_status()
        failed = wait_until(
            lambda: balancer.deliveries().count("injected 500") == 2 or None,
            timeout=30,
            what="both webhooks answered 500",
        )
        assert failed
        undelivered = stripe.http.get("/v1/events", params={"delivery_success": "false"}).json()
        assert {e["type"] for e in undelivered["data"]} == {
            "charge.refunded", "payment_intent.succeeded"}  # fmt: skip

        balancer.recover()  # the endpoint is back; Stripe sends nothing again
        recovered_at = time.monotonic()

        def truth() -> bool:
            refunded, succeeded = payment(api, paid["id"]), payment(api, waiting["id"])
            return (refunded["status"], refunded.get("amount_refunded"), succeeded["status"]) == (
                "refunded", "20.00", "succeeded")  # fmt: skip

        wait_until(lambda: truth() or None, timeout=CATCHUP_SECONDS + 15, what="the truth")
        # One period, then a maintenance tick and the event's task.
        assert time.monotonic() - recovered_at <= CATCHUP_SECONDS + 5

        # Another round reads the same events again (the window overlaps): nothing more.
        time.sleep(CATCHUP_SECONDS + 2)
        s.wait_until_idle()
        after = webhook_counts(api)
        moved = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        assert moved == {
            ("charge.refunded", "caught_up"): 1,
            ("charge.refunded", "applied"): 1,
            ("payment_intent.succeeded", "caught_up"): 1,
            ("payment_intent.succeeded", "applied"): 1,
        }
        assert balancer.deliveries() == []  # nothing came by webhook after the recovery
        assert payment(api, waiting["id"])["charge"].startswith("ch_")
        assert len(stripe.charges(waiting["account_id"])) == 1
