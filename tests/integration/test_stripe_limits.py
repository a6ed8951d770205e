"""Stripe's limits as Stripe meters them, on real processes: the fault proxy enforces Stripe's
published live limits (100 requests/s for the account, 25/s an endpoint) with Stripe's 429s, the
service runs with a live-mode key, two workers, Stripe answering in 50 ms, and 1,500 payments
arrive at once. The fleet drains at Stripe's ceiling for these charges (25 creates/s: each
charge reads its customer, then creates, one call of each endpoint), with hardly a 429 and every
payment charged; the same when an operator sets the global limit to Stripe's headline 100 by
hand, which alone would have let the fleet send creates at 50/s."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from devtools.demo import create_test_customer
from shared.store.keys import DEAD_LETTERS, record_key
from tests.integration.stack import Stack, pay
from tests.support import STRIPE_KEY

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COUNT = 1_500
ENDPOINT_LIMIT = 25.0  # creates/s: the binding limit of charges that read their customer
# A made-up live-mode key: only its prefix matters (the emulator takes any sk_ key).
LIVE_KEY = "sk_live_test_fake"


def drain(stack: Stack, customer: str) -> dict[str, Any]:
    """1,500 payments at once; returns the drain rate between its 10th and 90th percent of
    creates, the calls Stripe answered and those it answered 429, and the outcomes."""
    stack.proxy(latency_ms=50, stripe_limits="live")
    with stack.api(timeout=60) as api, ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: pay(api, customer, amount="1.00"), range(COUNT)))
    assert {r.status_code for r in responses} == {202}
    ids = [r.json()["id"] for r in responses]
    client = stack.redis()
    deadline = time.monotonic() + COUNT / ENDPOINT_LIMIT * 2 + 60
    while True:
        with client.pipeline(transaction=False) as pipe:
            for payment_id in ids:
                pipe.hget(record_key(payment_id), "status")
            statuses = Counter(s.decode() for s in pipe.execute())
        if statuses["succeeded"] + statuses["failed"] + statuses["unknown"] == COUNT:
            break
        assert time.monotonic() < deadline, f"not drained: {statuses}"
        time.sleep(2)
    log = stack.proxy_log()
    creates = sorted(
        e["time"]
        for e in log
        if e["method"] == "POST" and e["path"] == "/v1/payment_intents"
        and str(e.get("outcome", "")).startswith("forwarded")
    )  # fmt: skip
    low, high = creates[int(0.1 * len(creates))], creates[int(0.9 * len(creates))]
    return {
        "statuses": statuses,
        "dead": client.zcard(DEAD_LETTERS),
        "creates": len(creates),
        "rate": (int(0.9 * len(creates)) - int(0.1 * len(creates))) / (high - low),
        "calls": len(log),
        "limited": sum(1 for e in log if str(e.get("outcome", "")).startswith("rate_limited")),
    }


@pytest.mark.parametrize(
    "settings",
    [{}, {"STRIPE_MAX_RPS": "100"}],
    ids=["stripes-defaults", "global-100-by-hand"],
)
def test_1500_payments_drain_at_stripes_limit_with_hardly_a_429(
    tmp_path_factory: pytest.TempPathFactory, settings: dict[str, str]
) -> None:
    # CLIENT_MAX_RPS=0: one test client stands in for the many that would send such a burst.
    env = {"STRIPE_API_KEY": LIVE_KEY, "WORKER_CONCURRENCY": "128", "LOG_LEVEL": "INFO",
           "CLIENT_MAX_RPS": "0", **settings}  # fmt: skip
    headers = {"Authorization": f"Bearer {STRIPE_KEY}"}
    with (
        Stack.running(tmp_path_factory, "limits", env, workers=2) as stack,
        httpx.Client(base_url=stack.emulator_url, headers=headers) as http,
    ):
        customer = create_test_customer(http)
        result = drain(stack, customer)

    assert result["statuses"] == Counter({"succeeded": COUNT})
    assert result["dead"] == 0
    assert result["creates"] == COUNT  # one create a payment: a 429 is never charged twice
    # How close to the limit the drain gets (goal 0.95x) is the benchmark's figure
    # (python -m bench --only stripe-limit, docs/PERFORMANCE.md): a shared machine's load moves
    # it. Here, what must hold whatever the load: the drain does not collapse into 429s.
    assert result["rate"] >= 0.5 * ENDPOINT_LIMIT
    assert result["limited"] <= 0.01 * result["calls"]
    rate, limited, calls = result["rate"], result["limited"], result["calls"]
    print(f"\n[stripe limits {settings or 'defaults'}] {COUNT} payments, 2 workers, live key: "
          f"drained at {rate:.2f} charges/s = {rate / ENDPOINT_LIMIT:.2f}x of "
          f"{ENDPOINT_LIMIT:g}/s, {limited} 429s of {calls} calls")  # fmt: skip
