"""``python -m bench.replicated``: what ``REDIS_MIN_REPLICAS=1`` (``WAIT 1``) costs the accept.

Starts on loopback a redis-server (AOF on, as ``make bench``), optionally a replica of it on the
same machine, and the API with the plain entry point (``uvicorn api.main:app``), then loads
``POST /payments`` with wrk (``bench/wrk.lua``: a new Idempotency-Key per request) and prints
a Markdown table. Three set-ups, each in ``--rounds`` rounds of ``--seconds``:

- ``primary alone``: no replica, ``REDIS_MIN_REPLICAS=0`` (the default: today's service);
- ``+ replica``: the primary streams every write to a replica, nobody waits for it;
- ``+ replica, WAIT 1``: ``REDIS_MIN_REPLICAS=1``: each accept's script, a fence write and
  ``WAIT 1 500`` go in one pipeline, and the answer waits for the replica's acknowledgement.

Also Redis's CPU per accept (``INFO cpu`` of the primary, user + sys, over the run) and, for
docs/SCALING.md, ``MEMORY USAGE`` of one queued message and one payment record.

    python -m bench.replicated                        # 3 rounds of 6 s at 32 connections
    python -m bench.replicated --seconds 2 --rounds 1 # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench import wrk as wrk_mod
from devtools.processes import ProcessGroup, api_argv, free_port, wait_for_port
from devtools.sentinel import node_argv, replica_argv


@dataclass
class Row:
    name: str
    rps: list[float]
    p99: list[float]
    p50: list[float]
    errors: int
    redis_cpu_us: float  # primary's CPU per accept, microseconds


def say(message: str) -> None:
    print(f"[bench.replicated] {message}", file=sys.stderr, flush=True)


def cpu_seconds(client: redis.Redis) -> float:
    info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run_setup(
    name: str,
    *,
    replica: bool,
    min_replicas: int,
    seconds: float,
    rounds: int,
    connections: int,
    tmp: Path,
) -> tuple[Row, dict[str, int]]:
    group = ProcessGroup(tmp / f"logs-{name.replace(' ', '_').replace(',', '')}")
    with group:
        primary_port = free_port()
        data = tmp / f"primary-{primary_port}"
        data.mkdir()
        proc = group.start("primary", node_argv(primary_port, data))
        wait_for_port(primary_port, proc=proc)
        client = redis.Redis(port=primary_port)
        if replica:
            replica_port = free_port()
            rdata = tmp / f"replica-{replica_port}"
            rdata.mkdir()
            proc = group.start("replica", replica_argv(replica_port, rdata, primary_port))
            wait_for_port(replica_port, proc=proc)
            deadline = time.monotonic() + 30
            while int(client.info("replication").get("connected_slaves", 0)) < 1:
                if time.monotonic() > deadline:
                    raise TimeoutError("the replica never connected")
                time.sleep(0.1)
        api_port = free_port()
        env = {
            "REDIS_URL": f"redis://127.0.0.1:{primary_port}/0",
            "REDIS_MIN_REPLICAS": str(min_replicas),
            "STRIPE_API_BASE": "http://127.0.0.1:9",  # no worker runs: Stripe is never called
            "ENVIRONMENT": "test",
            "API_KEYS": wrk_mod.CLIENT_KEY,
            "QUEUE_MAX_BACKLOG": "100000000",
        }
        proc = group.start("api", api_argv(api_port), env=env)
        wait_for_port(api_port, proc=proc)
        url = f"http://127.0.0.1:{api_port}/payments"
        wrk_mod.run(url, connections=8, seconds=1)  # warm up
        row = Row(name, [], [], [], 0, 0.0)
        total_requests, total_cpu = 0, 0.0
        for i in range(rounds):
            before = cpu_seconds(client)
            result = wrk_mod.run(url, connections=connections, seconds=seconds)
            total_cpu += cpu_seconds(client) - before
            total_requests += result.requests
            row.rps.append(result.rps)
            row.p99.append(result.p99_ms)
            row.p50.append(result.p50_ms)
            row.errors += result.errors
            say(f"{name} round {i + 1}: {result.rps:.0f} req/s, p50 {result.p50_ms:.1f} ms, "
                f"p99 {result.p99_ms:.1f} ms, {result.errors} errors")  # fmt: skip
        row.redis_cpu_us = total_cpu / max(total_requests, 1) * 1e6
        sizes = memory_sizes(client)
        client.close()
    return row, sizes


def memory_sizes(client: redis.Redis) -> dict[str, int]:
    """MEMORY USAGE of one queued charge message (an element of the queue list, measured as
    the list's growth per element) and one payment record as accepted."""
    sizes: dict[str, int] = {}
    length = int(client.llen("payments"))
    if length:
        usage = client.memory_usage("payments", samples=0)
        sizes["queue bytes per queued payment"] = int(usage or 0) // length
        message: bytes = client.lindex("payments", 0)  # type: ignore[assignment]
        sizes["queued message length (bytes)"] = len(message)
    for key in client.scan_iter(match="payments:record:*", count=100):
        sizes["record (MEMORY USAGE, bytes)"] = int(client.memory_usage(key, samples=0) or 0)
        break
    pending = int(client.zcard("payments:pending"))
    if pending:
        usage = client.memory_usage("payments:pending", samples=0)
        sizes["pending index bytes per payment"] = int(usage or 0) // pending
    info: dict[str, Any] = client.info("memory")
    sizes["used_memory after the runs (bytes)"] = int(info["used_memory"])
    return sizes


def table(rows: list[Row], connections: int) -> str:
    base = statistics.median(rows[0].rps)
    lines = [
        f"| set-up ({connections} connections) | accepts/s (median) | vs primary alone | "
        "p50 ms | p99 ms (median) | Redis CPU per accept | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        rps = statistics.median(row.rps)
        lines.append(
            f"| {row.name} | {rps:.0f} | {rps / base:.2f}x | {statistics.median(row.p50):.1f} | "
            f"{statistics.median(row.p99):.1f} | {row.redis_cpu_us:.0f} µs | {row.errors} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    setups = [
        ("primary alone", False, 0),
        ("+ replica", True, 0),
        ("+ replica, WAIT 1 (REDIS_MIN_REPLICAS=1)", True, 1),
    ]
    rows: list[Row] = []
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-replicated-") as tmp:
        for name, replica, min_replicas in setups:
            row, found = run_setup(
                name,
                replica=replica,
                min_replicas=min_replicas,
                seconds=args.seconds,
                rounds=args.rounds,
                connections=args.connections,
                tmp=Path(tmp),
            )
            rows.append(row)
            sizes = sizes or found
    print(table(rows, args.connections))
    print()
    for name, value in sizes.items():
        print(f"- {name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
