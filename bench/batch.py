"""Batches against single requests, on the same API process in the same run.

Payments accepted per second through ``POST /payments/batch`` (batches of ``size``, each item its
own ``idempotency_key``) and through ``POST /payments`` (a unique ``Idempotency-Key`` a
request), in alternated rounds under wrk; what counts is Redis's own count of accepted payments
(``payments:accepted``), so a refused item is never counted. Then the Redis round trips a batch
takes: an app built in this process from ``api.main.create_app`` on a Redis client whose
connections count what they write (one request or pipeline is one write, and one round trip),
sent batches and single requests one at a time over ASGI; and Redis's own count of socket reads
(a large pipeline arrives in several).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
import redis.asyncio

from bench import wrk as wrk_mod
from shared.store import keys

ROUND_TRIP_SAMPLES = 20


@dataclass
class Round:
    payments_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_payment: float
    redis_cpu_us_per_payment: float = 0.0  # 0: Redis's process is not on this machine


@dataclass
class BatchResult:
    size: int
    seconds: float
    single_connections: int
    batch_connections: int
    singles: list[Round] = field(default_factory=list)
    batches: list[Round] = field(default_factory=list)
    round_trips_per_batch: float = 0.0
    round_trips_per_single: float = 0.0
    reads_per_batch: float = 0.0
    batch_bytes: int = 0
    # Two CPU-bound processes at once do this many times the work of one on this machine
    # (2.0 on two free cores): the API and Redis share it (parallel_capacity).
    parallel_capacity: float = 0.0
    # Redis's time in the accept script a payment, measured alone (no other load).
    batch_script_us: float = 0.0
    single_script_us: float = 0.0

    @property
    def ratios(self) -> list[float]:
        return [
            b.payments_per_s / s.payments_per_s
            for s, b in zip(self.singles, self.batches, strict=False)
            if s.payments_per_s
        ]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios) if self.ratios else 0.0


def _accepted(client: redis.Redis) -> int:
    return int(client.get(keys.ACCEPTED_COUNT) or 0)


def _round(
    argv: list[str],
    client: redis.Redis,
    cpu: Callable[[], float],
    redis_cpu: Callable[[], float],
    per_request: int,
) -> Round:
    accepted, used, redis_used = _accepted(client), cpu(), redis_cpu()
    r = wrk_mod.finish(wrk_mod.start(argv))
    accepted, used = _accepted(client) - accepted, cpu() - used
    redis_used = redis_cpu() - redis_used
    return Round(
        payments_per_s=accepted / r.seconds if r.seconds else 0.0,
        requests_per_s=r.rps,
        p50_ms=r.p50_ms,
        p99_ms=r.p99_ms,
        errors=r.errors + max(0, r.requests * per_request - accepted),
        cpu_us_per_payment=used / accepted * 1e6 if accepted and used else 0.0,
        redis_cpu_us_per_payment=redis_used / accepted * 1e6 if accepted and redis_used else 0.0,
    )


def measure(
    url: str,
    redis_url: str,
    cpu: Callable[[], float],
    *,
    redis_cpu: Callable[[], float] = lambda: 0.0,
    rounds: int,
    seconds: float,
    size: int = 100,
    single_connections: int = 32,
    batch_connections: int = 8,
) -> BatchResult:
    """Alternated rounds (single, batch, single, batch, ...) on the API at ``url``; ``cpu``
    gives the API process's CPU seconds so far, ``redis_cpu`` Redis's."""
    result = BatchResult(size, seconds, single_connections, batch_connections)
    result.parallel_capacity = parallel_capacity()
    client = redis.Redis.from_url(redis_url)
    try:
        warm = wrk_mod.batch_argv(url + "/payments/batch", connections=2, seconds=1, size=size)
        wrk_mod.finish(wrk_mod.start(warm))
        for _ in range(rounds):
            single = wrk_mod.wrk_argv(
                url + "/payments", connections=single_connections, seconds=seconds
            )
            result.singles.append(_round(single, client, cpu, redis_cpu, 1))
            batch = wrk_mod.batch_argv(
                url + "/payments/batch", connections=batch_connections, seconds=seconds, size=size
            )
            result.batches.append(_round(batch, client, cpu, redis_cpu, size))
    finally:
        client.close()
    # In a process of its own: importing api.main builds the app from the environment.
    env = {**os.environ, "ENVIRONMENT": "test", "REDIS_URL": redis_url,
           "API_ALLOW_ANONYMOUS": "true", "CLIENT_MAX_RPS": "0"}  # fmt: skip
    out = subprocess.run(  # noqa: S603 (this module, with the same interpreter)
        [sys.executable, "-m", "bench.batch", redis_url, str(size)],
        env=env, capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    counted = json.loads(out.strip().splitlines()[-1])
    result.round_trips_per_batch = counted["batch"]
    result.round_trips_per_single = counted["single"]
    result.reads_per_batch = counted["reads"]
    result.batch_bytes = counted["bytes"]
    result.batch_script_us = counted["batch_script_us"]
    result.single_script_us = counted["single_script_us"]
    return result


def _spin(seconds: float) -> int:
    """Counts as far as it can for ``seconds`` of wall time: CPU-bound work."""
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        n += 1
    return n


def parallel_capacity(seconds: float = 1.0) -> float:
    """How many times one process's CPU-bound work two processes do at once here: 2.0 on two
    free cores, less on hyperthreads or a shared host. The API and Redis (and wrk) share it,
    so a payment's cost is the sum of their CPU per payment."""
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        alone = pool.apply(_spin, (seconds,))
        both = sum(pool.map(_spin, [seconds, seconds]))
    return both / alone if alone else 0.0


class CountingConnection(redis.asyncio.Connection):
    """Counts what it writes to Redis: each request, or pipeline, is one write."""

    writes = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        await super().send_packed_command(command, check_health)


async def _round_trips(redis_url: str, size: int) -> dict[str, float]:
    """Round trips per batch and per single request, the median of a few sent one at a time,
    through the app as ``make run`` builds it (group commit on, its default)."""
    from api.main import create_app
    from shared.settings.service_settings import Settings

    settings = Settings(environment="test", redis_url=redis_url, api_allow_anonymous=True,
                        client_max_rps=0, queue_max_backlog=100_000_000)  # fmt: skip
    client = redis.asyncio.Redis.from_url(redis_url, connection_class=CountingConnection)
    info = redis.Redis.from_url(redis_url)
    app = create_app(settings, redis=client)
    batch_trips: list[int] = []
    single_trips: list[int] = []
    reads: list[int] = []
    # Redis's time in the accept script, us a payment (commandstats of EVALSHA around each).
    batch_script: list[float] = []
    single_script: list[float] = []
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as api:
                for n in range(ROUND_TRIP_SAMPLES):
                    items = [{"idempotency_key": f"rt-{n}-{j}", "account_id": "cus_bench1",
                              "amount": "42.99"} for j in range(size)]  # fmt: skip
                    body = httpx.Request("POST", "/", json={"payments": items}).content
                    script = _script_us(info)
                    before, read = CountingConnection.writes, _reads(info)
                    answer = await api.post(
                        "/payments/batch", content=body,
                        headers={"Content-Type": "application/json"},
                    )  # fmt: skip
                    batch_trips.append(CountingConnection.writes - before)
                    reads.append(_reads(info) - read - 1)  # less INFO's own request
                    batch_script.append((_script_us(info) - script) / size)
                    if answer.status_code != 202:
                        raise RuntimeError(f"a batch was answered {answer.status_code}")
                    before, script = CountingConnection.writes, _script_us(info)
                    await api.post("/payments", json={"account_id": "cus_bench1",
                                                      "amount": "42.99"})  # fmt: skip
                    single_script.append(_script_us(info) - script)
                    single_trips.append(CountingConnection.writes - before)
    finally:
        await client.aclose()
        info.close()
    return {
        "batch": statistics.median(batch_trips),
        "single": statistics.median(single_trips),
        "reads": statistics.median(reads),
        "bytes": len(body),
        "batch_script_us": statistics.median(batch_script),
        "single_script_us": statistics.median(single_script),
    }


def _script_us(client: redis.Redis) -> float:
    """Redis's time in EVALSHA so far (us; INFO commandstats)."""
    stats: dict[str, Any] = client.info("commandstats")
    return float(stats.get("cmdstat_evalsha", {}).get("usec", 0))


def _reads(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("stats")
    return int(stats.get("total_reads_processed", 0))


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_round_trips(sys.argv[1], int(sys.argv[2])))))
