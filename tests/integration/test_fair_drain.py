"""A greedy client's backlog does not delay a calm client, and the Stripe budget is shared by
weight (real processes; figures in docs/RELIABILITY.md).

Under a budget of 10 Stripe calls/s (5 charges/s), a greedy client queues 1,000 payments at
once; a calm client then sends 10, one a second, each waiting for its outcome. With one FIFO
queue they would wait behind the whole backlog (about 200 s). Then a third client of weight 3
queues 300 while the greedy one still has hundreds queued: it is served about three times as
fast. The worker runs the default pool (128 threads), which would hold 25 s of booked budget
without pacing.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.demo import create_test_customer
from tests.integration.stack import Stack
from tests.support import final, stripe_admin_http

pytestmark = pytest.mark.integration

GREEDY, CALM, HEAVY, OPS = "greedy-key", "calm-key", "heavy-key", "ops-key"
BACKLOG = 1_000
CALM_PAYMENTS = 10


def digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


CLIENTS = [
    {"name": "greedy", "keys": [digest(GREEDY)]},
    {"name": "calm", "keys": [digest(CALM)]},
    {"name": "heavy", "keys": [digest(HEAVY)], "weight": 3},
    {"name": "ops", "keys": [digest(OPS)], "scopes": ["admin"]},
]
ENV = {
    "API_CLIENTS": json.dumps(CLIENTS),
    "STRIPE_MAX_RPS": "10",
    "CLIENT_MAX_RPS": "0",
    "WORKER_CONCURRENCY": "128",
    "LOG_LEVEL": "INFO",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack.running(tmp_path_factory, "fair-drain", ENV, workers=1, fault_proxy=False) as s:
        yield s


def client(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=40
    )


def burst(stack: Stack, key: str, customer: str, count: int) -> None:
    """``count`` payments at once, over 8 connections."""

    def send(n: int) -> None:
        with client(stack, key) as api:
            for _ in range(n):
                answer = api.post("/payments", json={"account_id": customer, "amount": "1.00"})
                assert answer.status_code == 202, answer.text

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, [count // 8 + (i < count % 8) for i in range(8)]))


def waiting(stack: Stack) -> dict[str, float]:
    """/metrics: payments_queue_depth, and what waits in each queue."""
    with client(stack, OPS) as api:
        text = api.get("/metrics").raise_for_status().text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "payments_queue_depth":
                found["depth"] = sample.value
            if sample.name == "payments_queue_waiting":
                found[sample.labels["queue"]] = sample.value
    return found


def test_a_calm_client_is_charged_within_seconds_behind_a_greedy_backlog(stack: Stack) -> None:
    with stripe_admin_http(stack.stripe_base) as http:
        customer = create_test_customer(http)
    started = time.monotonic()
    burst(stack, GREEDY, customer, BACKLOG)
    queued_in = time.monotonic() - started
    seen = waiting(stack)
    # Every queued payment counts in the depth (the autoscaling signal), wherever it waits.
    assert seen["depth"] >= BACKLOG - 5 * (time.monotonic() - started) - 10

    latencies: list[float] = []
    statuses: list[str] = []
    lock = threading.Lock()

    def calm_payment() -> None:
        sent = time.monotonic()
        with client(stack, CALM) as api:
            answer = api.post(
                "/payments", json={"account_id": customer, "amount": "3.00"}, params={"wait": 30}
            )
            body = answer.json() if answer.status_code == 200 else final(api, answer.json()["id"])
        with lock:
            latencies.append(time.monotonic() - sent)
            statuses.append(body["status"])

    threads = []
    for _ in range(CALM_PAYMENTS):
        thread = threading.Thread(target=calm_payment)
        thread.start()
        threads.append(thread)
        time.sleep(1)
    for thread in threads:
        thread.join(timeout=120)
    greedy_left = waiting(stack).get("payments.greedy", 0)

    p50 = statistics.median(latencies)
    p90 = statistics.quantiles(latencies, n=10)[8]
    print(
        f"\n[fair drain] greedy: {BACKLOG} queued in {queued_in:.1f} s; calm: {CALM_PAYMENTS} "
        f"payments, one a second, accept to succeeded p50 {p50:.1f} s, p90 {p90:.1f} s, max "
        f"{max(latencies):.1f} s; greedy still queued after: {greedy_left:.0f}"
    )
    assert statuses == ["succeeded"] * CALM_PAYMENTS
    assert greedy_left > 500  # the calm client did not wait for the backlog to drain
    assert p90 <= 15


def test_the_budget_is_shared_by_weight(stack: Stack) -> None:
    with stripe_admin_http(stack.stripe_base) as http:
        customer = create_test_customer(http)
    before = waiting(stack)
    assert before.get("payments.greedy", 0) > 300  # still a backlog from the first test
    burst(stack, HEAVY, customer, 300)
    start = waiting(stack)
    time.sleep(20)
    end = waiting(stack)
    greedy = start["payments.greedy"] - end["payments.greedy"]
    heavy = start["payments.heavy"] - end["payments.heavy"]
    print(
        f"\n[fair drain] weights 3:1, both queued, 20 s: heavy taken {heavy:.0f}, greedy taken "
        f"{greedy:.0f} (ratio {heavy / max(greedy, 1):.2f})"
    )
    assert greedy > 0
    assert 2 <= heavy / greedy <= 4.5
