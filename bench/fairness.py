"""Fairness: a calm client's payments behind a greedy client's backlog, under a Stripe cap.

The API and one worker (the plain entry point, the default pool) run with two clients and
STRIPE_MAX_RPS capped; the greedy client queues ``backlog`` payments at once over 8
connections, then the calm one sends ``calm`` payments, one a second, each asking to wait for
its outcome (``?wait=30``, then polled). What is measured: each calm payment's time from its
request to ``succeeded``, and how many of the greedy client's were still queued afterwards.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import redis

from devtools.processes import (
    ProcessGroup,
    api_argv,
    celery_worker_argv,
    free_port,
    wait_for_log,
    wait_for_port,
)
from shared.store.keys import client_queue

GREEDY_KEY, CALM_KEY = "bench-greedy-key", "bench-calm-key"


def _digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


CLIENTS = [
    {"name": "greedy", "keys": [_digest(GREEDY_KEY)]},
    {"name": "calm", "keys": [_digest(CALM_KEY)]},
]


@dataclass(frozen=True, slots=True)
class FairnessResult:
    cap: float  # STRIPE_MAX_RPS
    backlog: int  # the greedy client's payments queued at once
    latencies: list[float]  # seconds from each calm payment's request to its outcome
    succeeded: int  # calm payments that succeeded
    greedy_left: int  # the greedy client's payments still queued after the calm ones

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0

    @property
    def p90(self) -> float:
        if len(self.latencies) < 2:
            return max(self.latencies, default=0.0)
        return statistics.quantiles(self.latencies, n=10, method="inclusive")[8]


def _burst(url: str, count: int) -> None:
    def send(n: int) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {GREEDY_KEY}"}, timeout=30) as api:
            for _ in range(n):
                api.post(url, json={"account_id": "cus_bench1", "amount": "1.00"})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, [count // 8 + (i < count % 8) for i in range(8)]))


def _calm_payment(url: str, latencies: list[float], statuses: list[str]) -> None:
    sent = time.monotonic()
    with httpx.Client(headers={"Authorization": f"Bearer {CALM_KEY}"}, timeout=40) as api:
        answer = api.post(
            url, json={"account_id": "cus_bench1", "amount": "3.00"}, params={"wait": 30}
        )
        body = answer.json()
        deadline = sent + 300
        while body.get("status") in ("queued", "processing") and time.monotonic() < deadline:
            time.sleep(0.2)
            body = api.get(f"{url}/{body['id']}").json()
    latencies.append(time.monotonic() - sent)
    statuses.append(str(body.get("status")))


def measure(
    group: ProcessGroup,
    redis_url: str,
    env: dict[str, str],
    *,
    cap: float,
    backlog: int,
    calm: int,
) -> FairnessResult:
    """``env``: the service's environment (Redis, the Stripe stub); clients and the cap added."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    env = {**env, "API_CLIENTS": json.dumps(CLIENTS), "STRIPE_MAX_RPS": f"{cap:g}"}
    env.pop("WORKER_CONCURRENCY", None)  # the default pool
    run = uuid.uuid4().hex[:6]
    worker, api = f"fairness-worker-{run}", f"fairness-api-{run}"
    group.start(worker, celery_worker_argv("-n", f"fair{run}@%h"), env=env)
    port = free_port()
    proc = group.start(api, api_argv(port), env=env)
    try:
        wait_for_port(port, proc=proc)
        wait_for_log(group.log_dir / f"{worker}.log", "ready.")
        url = f"http://127.0.0.1:{port}/payments"
        _burst(url, backlog)
        latencies: list[float] = []
        statuses: list[str] = []
        threads = []
        for _ in range(calm):
            thread = threading.Thread(target=_calm_payment, args=(url, latencies, statuses))
            thread.start()
            threads.append(thread)
            time.sleep(1)
        for thread in threads:
            thread.join()
        left = int(client.llen(client_queue("payments", "greedy")))
    finally:
        group.stop(api)
        group.stop(worker, grace=30)
        client.close()
    return FairnessResult(
        cap=cap,
        backlog=backlog,
        latencies=latencies,
        succeeded=statuses.count("succeeded"),
        greedy_left=left,
    )
