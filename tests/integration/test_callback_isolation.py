"""No callback receiver can hold a worker, on real processes: one 16-thread worker runs charges
and callbacks; client A's 60 payments carry a callback URL whose server reads the request and
then trickles its answer one byte every 2 s; 20 s later client B sends 40 payments. B's are
charged about as fast as B's first 40 were, before any slow receiver (the same run); no
callback connection lives past the 15 s deadline; A's callbacks never hold more than their
client's share of the worker; B's own callbacks still arrive; SIGTERM stops the worker within
45 s. Figures in docs/RELIABILITY.md (``-s`` prints them)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.callback_receiver import CallbackReceiver, TricklingReceiver
from tests.integration.stack import Stack
from tests.support import wait_until

pytestmark = pytest.mark.integration

KEY_A, KEY_B = "shop-a-" + secrets.token_hex(8), "shop-b-" + secrets.token_hex(8)
CALLBACK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
DEADLINE = 15.0  # CALLBACK_TIMEOUT_SECONDS' default
THREADS = 16


def digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


CLIENTS = [
    {"name": "shop-a", "keys": [digest(KEY_A)], "max_rps": 1000, "burst": 1000},
    {"name": "shop-b", "keys": [digest(KEY_B)], "max_rps": 1000, "burst": 1000},
]
ENV = {
    "API_CLIENTS": json.dumps(CLIENTS),
    "WORKER_CONCURRENCY": str(THREADS),
    "STRIPE_MAX_RPS": "0",  # threads, not the Stripe budget, are what a receiver could take
    "CALLBACK_SIGNING_SECRETS": CALLBACK_SECRET,
    "CALLBACK_ALLOW_PRIVATE_NETWORKS": "true",  # the receivers listen on 127.0.0.1
    "MAINTENANCE_INTERVAL_SECONDS": "1",
    "LOG_LEVEL": "INFO",
}


def burst(api_url: str, key: str, customer: str, count: int, callback_url: str) -> float:
    """``count`` payments at once, each waiting for its outcome; seconds until the last one
    succeeded (every one must)."""

    def one(n: int) -> int:
        with httpx.Client(base_url=api_url, timeout=60,
                          headers={"Authorization": f"Bearer {key}"}) as api:  # fmt: skip
            answer = api.post("/payments", params={"wait": 30}, json={
                "account_id": customer, "amount": f"{n + 1}.00", "callback_url": callback_url,
            })  # fmt: skip
            return answer.status_code if answer.json().get("status") == "succeeded" else -1

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=count) as pool:
        statuses = list(pool.map(one, range(count)))
    assert statuses == [200] * count, statuses
    return time.monotonic() - started


def test_a_trickling_receiver_holds_neither_the_charges_nor_the_worker(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with (
        Stack.running(tmp_path_factory, "callback-isolation", ENV, workers=1,
                      fault_proxy=False) as stack,
        stack.stripe_admin() as stripe,
        CallbackReceiver({"global": CALLBACK_SECRET}, fail_first=False) as fast,
        TricklingReceiver(interval=2.0) as slow,
    ):  # fmt: skip
        customer_a, customer_b = stripe.customer(), stripe.customer()
        alone = burst(stack.api_url, KEY_B, customer_b, 40, fast.url)

        a_started = time.monotonic()
        with httpx.Client(base_url=stack.api_url, timeout=30,
                          headers={"Authorization": f"Bearer {KEY_A}"}) as api_a:  # fmt: skip
            a_ids = [
                api_a.post("/payments", json={"account_id": customer_a, "amount": "5.00",
                                              "callback_url": slow.url}).json()["id"]
                for _ in range(60)
            ]  # fmt: skip
            wait_until(lambda: slow.connections or None, timeout=30, what="A's first callback")
            time.sleep(max(0.0, 20 - (time.monotonic() - a_started)))
            beside_slow = burst(stack.api_url, KEY_B, customer_b, 40, fast.url)
            b_told = wait_until(
                lambda: len([d for d in fast.deliveries if d["status"] == 200]) >= 80 or None,
                timeout=60, what="B's 80 payment.succeeded callbacks",
            )  # fmt: skip
            a_done = [api_a.get(f"/payments/{p}").json()["status"] for p in a_ids]

        a_slow_connections = len(slow.connections)
        most_open = slow.most_open
        stopping = time.monotonic()
        stack.signal_worker("w1", signal.SIGTERM, grace=60)
        stopped_in = time.monotonic() - stopping
        time.sleep(0.5)
        lifetimes = slow.lifetimes()
        connections = len(slow.connections)
        events = [e.get("event") for e in stack.worker_events("w1")]

    print(f"\n[callbacks] B's 40 payments: {alone:.1f}s alone, {beside_slow:.1f}s beside A's "
          f"trickling receiver; A's receiver got {a_slow_connections} connections, at most "
          f"{most_open} at once, the longest open {max(lifetimes):.1f}s; "
          f"{events.count('callback.deadline')} deadlines hit; "
          f"SIGTERM to exit {stopped_in:.1f}s")  # fmt: skip
    assert b_told
    assert a_done == ["succeeded"] * 60  # A's charges were never held by A's receiver either
    assert beside_slow <= max(2 * alone, alone + 5)  # about as fast as with no slow receiver
    assert max(lifetimes) <= DEADLINE + 1.5  # no callback connection lives past its deadline
    assert most_open <= THREADS // 4 // 2  # A's callbacks: at most its share of the worker
    # Each connection ended by the deadline (some may begin while the worker stops).
    assert events.count("callback.deadline") == connections, (connections, a_slow_connections)
    assert stopped_in < 45
