"""``python -m bench.replicated``: what ``REDIS_MIN_REPLICAS=1`` (``WAIT 1``) costs the accept.

Starts on loopback a redis-server (AOF on, as ``make bench``), optionally a replica of it on the
same machine, and the API with the plain entry point (``uvicorn api.main:app``), then loads
``POST /payments`` with wrk (``bench/wrk.lua``: a new Idempotency-Key per request) and prints
a Markdown table. Four set-ups, each in ``--rounds`` rounds of ``--seconds``:

- ``primary alone``: no replica, ``REDIS_MIN_REPLICAS=0`` (the default);
- ``+ replica``: the primary streams every write to a replica, nobody waits for it;
- ``+ replica, group commit off``: the same, each accept its own round trip (as with WAIT);
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
from shared.store import charge_queues


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


@dataclass
class Setup:
    name: str
    url: str
    client: redis.Redis
    row: Row
    requests: int = 0
    cpu: float = 0.0


def start_setup(
    group: ProcessGroup,
    name: str,
    *,
    replica: bool,
    min_replicas: int,
    extra_env: dict[str, str],
    tmp: Path,
) -> Setup:
    """A primary (and a replica of it) and the API, all left running in ``group``."""
    primary_port = free_port()
    data = tmp / f"primary-{primary_port}"
    data.mkdir()
    proc = group.start(f"primary-{primary_port}", node_argv(primary_port, data))
    wait_for_port(primary_port, proc=proc)
    client = redis.Redis(port=primary_port)
    if replica:
        replica_port = free_port()
        rdata = tmp / f"replica-{replica_port}"
        rdata.mkdir()
        argv = replica_argv(replica_port, rdata, primary_port)
        proc = group.start(f"replica-{replica_port}", argv)
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
        "CLIENT_MAX_RPS": "0",  # one client key sends it all: no per-client rate limit
        **extra_env,
    }
    proc = group.start(f"api-{api_port}", api_argv(api_port), env=env)
    wait_for_port(api_port, proc=proc)
    url = f"http://127.0.0.1:{api_port}/payments"
    wrk_mod.run(url, connections=8, seconds=1)  # warm up
    return Setup(name, url, client, Row(name, [], [], [], 0, 0.0))


def run_round(setup: Setup, *, seconds: float, connections: int, round_no: int) -> None:
    before = cpu_seconds(setup.client)
    result = wrk_mod.run(setup.url, connections=connections, seconds=seconds)
    setup.cpu += cpu_seconds(setup.client) - before
    setup.requests += result.requests
    row = setup.row
    row.rps.append(result.rps)
    row.p99.append(result.p99_ms)
    row.p50.append(result.p50_ms)
    row.errors += result.errors
    row.redis_cpu_us = setup.cpu / max(setup.requests, 1) * 1e6
    say(f"{setup.name} round {round_no}: {result.rps:.0f} req/s, p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms, {result.errors} errors")  # fmt: skip


@dataclass
class DrainRow:
    name: str
    charges_per_s: float
    succeeded: int
    count: int
    redis_cpu_us: float  # primary's CPU per payment, accept to acknowledgement


def drain_setup(
    name: str, *, replica: bool, min_replicas: int, count: int, latency_ms: float, tmp: Path
) -> DrainRow:
    """``count`` payments accepted through the API's accept path (bench.drain) and charged by
    one worker against the Stripe stub (``latency_ms`` per call, cap off): the steady rate and
    Redis's CPU per payment over the whole run (accept, charge, outcome, acknowledgement)."""
    import os
    import uuid

    from bench import drain
    from devtools.processes import celery_worker_argv, python_module, wait_for_log

    group = ProcessGroup(tmp / f"drain-{uuid.uuid4().hex[:6]}")
    with group:
        primary_port = free_port()
        data = tmp / f"drain-primary-{primary_port}"
        data.mkdir()
        proc = group.start("primary", node_argv(primary_port, data))
        wait_for_port(primary_port, proc=proc)
        client = redis.Redis(port=primary_port)
        if replica:
            replica_port = free_port()
            rdata = tmp / f"drain-replica-{replica_port}"
            rdata.mkdir()
            proc = group.start("replica", replica_argv(replica_port, rdata, primary_port))
            wait_for_port(replica_port, proc=proc)
            while int(client.info("replication").get("connected_slaves", 0)) < 1:
                time.sleep(0.1)
        stub_port = free_port()
        proc = group.start("stub", python_module("bench.stripe_stub", "--port", str(stub_port),
                                                 "--latency-ms", f"{latency_ms:g}"))  # fmt: skip
        wait_for_port(stub_port, proc=proc)
        url = f"redis://127.0.0.1:{primary_port}/0"
        env = {
            "REDIS_URL": url,
            "REDIS_MIN_REPLICAS": str(min_replicas),
            "STRIPE_API_BASE": f"http://127.0.0.1:{stub_port}",
            "ENVIRONMENT": "test",
            "STRIPE_MAX_RPS": "0",
        }
        proc = group.start("worker", celery_worker_argv("-n", "replbench@%h"), env=env)
        wait_for_log(group.log_dir / "worker.log", "ready.")
        os.environ["REDIS_MIN_REPLICAS"] = str(min_replicas)  # the accepts bench.drain makes
        try:
            before = cpu_seconds(client)
            result = drain.measure(url, workers=1, latency_ms=latency_ms, count=count,
                                   timeout=180, run_id=f"repl-{uuid.uuid4().hex[:8]}")  # fmt: skip
            cpu = cpu_seconds(client) - before
        finally:
            os.environ.pop("REDIS_MIN_REPLICAS", None)
        client.close()
    row = DrainRow(name, result.steady_rate, result.succeeded, count, cpu / count * 1e6)
    say(f"drain {name}: {row.charges_per_s:.1f} charges/s, {row.succeeded}/{count} succeeded, "
        f"Redis CPU {row.redis_cpu_us:.0f} µs per payment")  # fmt: skip
    return row


def memory_sizes(client: redis.Redis) -> dict[str, int]:
    """MEMORY USAGE of one queued charge message (an element of the queue list, measured as
    the list's growth per element) and one payment record as accepted."""
    sizes: dict[str, int] = {}
    # The benchmark's one client key: its charges fill one client queue.
    lengths = charge_queues.read(client, "payments").lengths
    queue = max(lengths, key=lengths.__getitem__)
    length = lengths[queue]
    if length:
        usage = client.memory_usage(queue, samples=0)
        sizes["queue bytes per queued payment"] = int(usage or 0) // length
        message: bytes = client.lindex(queue, 0)  # type: ignore[assignment]
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
    parser.add_argument("--drain", type=int, default=3000,
                        help="payments charged in the drain part (0: skip it)")  # fmt: skip
    args = parser.parse_args(argv)
    setups: list[tuple[str, bool, int, dict[str, str]]] = [
        ("primary alone", False, 0, {}),
        ("+ replica", True, 0, {}),
        # WAIT must follow the script on its own connection, so a replicated accept is its own
        # pipeline, outside the group commit: this row tells that part of the cost apart.
        ("+ replica, group commit off", True, 0, {"ACCEPT_GROUP_COMMIT": "false"}),
        ("+ replica, WAIT 1 (REDIS_MIN_REPLICAS=1)", True, 1, {}),
    ]
    with tempfile.TemporaryDirectory(prefix="bench-replicated-") as tmp:
        group = ProcessGroup(Path(tmp) / "logs")
        with group:
            running = [
                start_setup(
                    group,
                    name,
                    replica=replica,
                    min_replicas=min_replicas,
                    extra_env=extra_env,
                    tmp=Path(tmp),
                )
                for name, replica, min_replicas, extra_env in setups
            ]
            # Rounds alternate between the set-ups: the machine's noise spreads over all.
            for round_no in range(1, args.rounds + 1):
                for setup in running:
                    run_round(setup, seconds=args.seconds, connections=args.connections,
                              round_no=round_no)  # fmt: skip
            rows = [setup.row for setup in running]
            sizes = memory_sizes(running[-1].client)
            for setup in running:
                setup.client.close()
    print(table(rows, args.connections))
    if args.drain:
        with tempfile.TemporaryDirectory(prefix="bench-replicated-drain-") as tmp:
            drains = [
                drain_setup(
                    name,
                    replica=replica,
                    min_replicas=wanted,
                    count=args.drain,
                    latency_ms=50.0,
                    tmp=Path(tmp),
                )
                for name, replica, wanted in (
                    ("primary alone", False, 0),
                    ("+ replica, WAIT 1 (REDIS_MIN_REPLICAS=1)", True, 1),
                )
            ]
        print()
        print(f"Drain: {args.drain} payments accepted, then charged by one worker (128 threads), "
              "Stripe stub 50 ms a call, cap off")  # fmt: skip
        print()
        print("| set-up | charges/s (steady) | succeeded | Redis CPU per payment (accept to ack) |")
        print("| --- | --- | --- | --- |")
        for d in drains:
            print(f"| {d.name} | {d.charges_per_s:.1f} | {d.succeeded}/{d.count} | "
                  f"{d.redis_cpu_us:.0f} µs |")  # fmt: skip
    print()
    for name, value in sizes.items():
        print(f"- {name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
