"""Two clients with different keys and scopes against real processes: each sees its own
payments only, and a greedy client saturating its rate limit leaves the other's accept latency
and success rate as they were alone (figures in docs/RELIABILITY.md)."""

from __future__ import annotations

import hashlib
import json
import statistics
import threading
import time

import httpx
import pytest

from devtools.demo import create_test_customer
from tests.integration.stack import Stack
from tests.support import stripe_admin_http

pytestmark = pytest.mark.integration

GREEDY, CALM, OPS = "greedy-client-key", "calm-client-key", "ops-client-key"


def digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


CLIENTS = [
    {"name": "greedy", "keys": [digest(GREEDY)], "max_rps": 50, "burst": 50},
    {"name": "calm", "keys": [digest(CALM)], "max_rps": 50, "burst": 50},
    {"name": "ops", "keys": [digest(OPS)], "scopes": ["admin"]},
]


def calm_round(api: str, customer: str, count: int) -> tuple[list[float], int]:
    """``count`` payments at 20/s from the calm client: latencies and how many were 202."""
    latencies, ok = [], 0
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {CALM}"}) as client:
        for _ in range(count):
            started = time.perf_counter()
            answer = client.post("/payments", json={"account_id": customer, "amount": "1.00"})
            latencies.append(time.perf_counter() - started)
            ok += answer.status_code == 202
            time.sleep(max(0.0, 0.05 - (time.perf_counter() - started)))
    return latencies, ok


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def test_a_greedy_client_does_not_crowd_out_another(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = {"API_CLIENTS": json.dumps(CLIENTS), "LOG_LEVEL": "INFO"}
    with Stack.running(tmp_path_factory, "tenancy", env, workers=0) as stack:
        with stripe_admin_http(stack.stripe_base) as http:
            customer = create_test_customer(http)
        alone, alone_ok = calm_round(stack.api_url, customer, 200)

        stop = threading.Event()
        greedy_answers: list[int] = []

        def hammer() -> None:
            with httpx.Client(base_url=stack.api_url,
                              headers={"Authorization": f"Bearer {GREEDY}"}) as client:  # fmt: skip
                while not stop.is_set():
                    answer = client.post(
                        "/payments", json={"account_id": customer, "amount": "2.00"}
                    )
                    greedy_answers.append(answer.status_code)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            crowded, crowded_ok = calm_round(stack.api_url, customer, 200)
        finally:
            stop.set()
            for thread in threads:
                thread.join()

        # Each sees its own payments only; only the admin sees the dead letters.
        with stripe_admin_http(stack.stripe_base) as http:
            stranger = create_test_customer(http)
        with httpx.Client(base_url=stack.api_url) as client:
            calm, greedy, ops = ({"Authorization": f"Bearer {k}"} for k in (CALM, GREEDY, OPS))
            mine = client.post("/payments", json={"account_id": customer, "amount": "3.00"},
                               headers=calm).json()  # fmt: skip
            as_greedy = client.get(f"/payments/{mine['id']}", headers=greedy)
            as_ops = client.get(f"/payments/{mine['id']}", headers=ops)
            own_customer = client.get(f"/{customer}/payments", headers=calm)
            other_customer = client.get(f"/{stranger}/payments", headers=calm)
            any_customer = client.get(f"/{stranger}/payments", headers=ops)
            letters = [client.get("/admin/dead-letters", headers=h) for h in (calm, ops)]

    limited = greedy_answers.count(429)
    assert alone_ok == crowded_ok == 200
    assert limited > 0  # the greedy client was held to its rate
    assert as_greedy.status_code == 404
    assert as_ops.status_code == 200
    # Accepted but never charged (no worker here): no right to list the customer's charges.
    assert own_customer.status_code == 404
    assert other_customer.status_code == 404
    assert any_customer.status_code == 200
    assert [r.status_code for r in letters] == [404, 200]
    print(
        f"\n[tenancy] calm client alone: p99 {p99(alone) * 1000:.1f} ms, 200/200 accepted; "
        f"with a greedy client hammering (4 threads, {len(greedy_answers)} requests, "
        f"{limited} answered 429): p99 {p99(crowded) * 1000:.1f} ms, 200/200 accepted"
    )
    # The same process answers the greedy client's 429s: on a shared 2-core machine that costs
    # the calm one some milliseconds, never a refusal.
    assert p99(crowded) <= max(4 * p99(alone), p99(alone) + 0.1)
