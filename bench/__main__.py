"""``make bench`` / ``python -m bench``: measure the service and write docs/PERFORMANCE.md.

Starts, on loopback only, everything it measures and stops it again: its own redis-server on a
free port, the constant-latency Stripe stub (bench.stripe_stub), the bare FastAPI yardstick
(bench.bare_app) and the real API with the same uvicorn flags, and Celery workers started by the
plain entry point (``celery -A worker.celery_app worker``). Load comes from wrk.

    python -m bench                  # full run, about 4 minutes on 2 cores
    python -m bench --smoke --output-dir /tmp/x   # a few seconds of each, for the tests
    python -m bench --only batch     # one part alone; rewrites only its section of the report
    python -m bench --only cost      # likewise: what a payment costs Redis (the capped drain)
    python -m bench --only stripe-limit   # likewise: the drain at Stripe's limit
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench import batch, drain, fairness, report, stripe_limit
from bench import profile as bench_profile
from bench import wrk as wrk_mod
from devtools.processes import (
    ROOT,
    ProcessGroup,
    api_argv,
    celery_worker_argv,
    free_port,
    python_module,
    redis_server_binary,
    temporary_redis,
    wait_for_log,
    wait_for_port,
)
from shared.settings.service_settings import Settings

SCALING_CONCURRENCY = 16


@dataclass
class Plan:
    accept_seconds: float = 4.0
    accept_rounds: int = 5
    accept_connections: tuple[int, ...] = (32, 64)
    sweep_connections: tuple[int, ...] = (1, 8, 32, 64)
    sweep_seconds: float = 3.0
    profile_seconds: float = 8.0
    list_seconds: float = 6.0
    list_latency_ms: float = 50.0
    list_load_connections: int = 32
    list_rounds: int = 3
    drain_latencies_ms: tuple[float, ...] = (200.0,)
    drain_workers: tuple[int, ...] = (1, 2)
    drain_seconds: float = 12.0  # aimed-for length of one drain run (sets the payment count)
    capped_seconds: float = 60.0  # the drain of two workers under the default Stripe cap
    capped_latency_ms: float = 50.0
    fairness_cap: float = 10.0  # STRIPE_MAX_RPS of the fairness run
    fairness_backlog: int = 1_000  # the greedy client's payments, queued at once
    fairness_calm: int = 10  # the calm client's, one a second
    batch_rounds: int = 3
    batch_seconds: float = 5.0
    batch_size: int = 100
    limit_count: int = 1_500  # payments at once for the drain at Stripe's limit


SMOKE = Plan(
    accept_seconds=1,
    accept_rounds=1,
    accept_connections=(32,),
    sweep_connections=(8,),
    sweep_seconds=1,
    profile_seconds=1,
    list_seconds=1,
    list_load_connections=8,
    list_rounds=1,
    drain_latencies_ms=(50.0,),
    drain_seconds=0.5,
    capped_seconds=2.0,
    fairness_backlog=100,
    fairness_calm=3,
    batch_rounds=1,
    batch_seconds=1,
    limit_count=60,
)

# The servers of the accept parts, all with the API's uvicorn flags and logging: (app, env).
SERVERS: dict[str, tuple[str, dict[str, str]]] = {
    "bare": ("bench.bare_app:app", {}),
    "script": ("bench.script_app:app", {"BENCH_GROUP_COMMIT": "0"}),
    "script_gc": ("bench.script_app:app", {"BENCH_GROUP_COMMIT": "1"}),
    "real_nogc": ("api.main:app", {"ACCEPT_GROUP_COMMIT": "false"}),
    "real": ("api.main:app", {}),
    "real_unbounded": ("api.main:app", {"LIST_MAX_CONCURRENCY": "1024"}),
}


@dataclass
class Results:
    # connections -> server -> rounds
    accept: dict[int, dict[str, list[wrk_mod.WrkResult]]] = field(default_factory=dict)
    # connections -> server -> rounds: microseconds of the server's CPU per request
    accept_cpu_us: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    sweep: dict[str, dict[int, wrk_mod.WrkResult]] = field(default_factory=dict)
    sweep_cpu_us: dict[str, dict[int, float]] = field(default_factory=dict)
    profile: list[str] = field(default_factory=list)  # the profile's table, or why none
    list_direct: wrk_mod.WrkResult | None = None
    list_api: wrk_mod.WrkResult | None = None
    # server -> rounds of (accept alone, accept next to the list load, the list load)
    under_list: dict[str, list[tuple[wrk_mod.WrkResult, wrk_mod.WrkResult, wrk_mod.WrkResult]]] = (
        field(default_factory=dict)
    )
    drains: list[drain.DrainResult] = field(default_factory=list)
    scaling: list[drain.DrainResult] = field(default_factory=list)
    capped: drain.DrainResult | None = None
    capped_rps: float = 0.0
    fairness: fairness.FairnessResult | None = None
    batch: batch.BatchResult | None = None
    stripe_limit: stripe_limit.StripeLimitResult | None = None
    settings: dict[str, str] = field(default_factory=dict)


BENCH_CLIENT = {"name": "bench", "keys": [wrk_mod.CLIENT_KEY],
                "scopes": ["payments", "customers:all"]}  # fmt: skip


def service_env(redis_url: str, stub: str) -> dict[str, str]:
    """What the API and the workers are started with. STRIPE_MAX_RPS=0: the shared Stripe
    rate limit (20 calls/s by default) is off, so that the stub's latency is the limit measured
    (the drain goal needs about 300 Stripe calls/s from one worker at 200 ms)."""
    env = {
        "REDIS_URL": redis_url,
        "STRIPE_API_BASE": stub,
        "ENVIRONMENT": "test",
        # customers:all: the list measured is Stripe's page as it comes (one call), listed
        # without a succeeded payment first (the accept runs charge nothing).
        "API_CLIENTS": json.dumps([BENCH_CLIENT]),
        "STRIPE_MAX_RPS": os.environ.get("STRIPE_MAX_RPS", "0"),
        # The accept runs fill the queue with no worker draining it: no backpressure here.
        "QUEUE_MAX_BACKLOG": "100000000",
        # One client key stands in for many clients: no per-client rate limit (CLIENT_MAX_RPS
        # defaults to 200/s, which would turn the load into cheap 429s).
        "CLIENT_MAX_RPS": "0",
    }
    return env


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def http(method: str, url: str) -> bytes:
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("the benchmark talks to loopback only")
    headers = {"Authorization": f"Bearer {wrk_mod.CLIENT_KEY}"}
    req = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310 (loopback)
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        body: bytes = resp.read()
        return body


@contextmanager
def uvicorn(
    group: ProcessGroup, name: str, app: str, env: dict[str, str]
) -> Iterator[tuple[str, int]]:
    """``app`` served with exactly the flags of the real API (devtools.processes.api_argv);
    yields its URL and pid."""
    port = free_port()
    argv = api_argv(port)
    argv[argv.index("api.main:app")] = app
    proc = group.start(name, argv, env=env)
    wait_for_port(port, proc=proc)
    try:
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        group.stop(name)


def warm_up(url: str) -> None:
    wrk_mod.run(url + "/payments", connections=8, seconds=1)


def log_lines(group: ProcessGroup, names: list[str]) -> dict[str, int]:
    """Lines each server has logged so far: the yardstick and the API must log alike."""
    counts = {}
    for name in names:
        path = group.log_dir / f"{name}.log"
        counts[name] = len(path.read_bytes().splitlines()) if path.exists() else 0
    return counts


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_accept(
    plan: Plan, results: Results, urls: dict[str, str], group: ProcessGroup, pids: dict[str, int]
) -> None:
    say("warming up the servers")
    for url in urls.values():
        warm_up(url)
    before = log_lines(group, ["bare", "real"])
    for conns in plan.accept_connections:
        runs: dict[str, list[wrk_mod.WrkResult]] = {"bare": [], "real": []}
        cpu: dict[str, list[float]] = {"bare": [], "real": []}
        for i in range(plan.accept_rounds):
            for name in ("bare", "real"):
                used = cpu_seconds(pids[name])
                r = wrk_mod.run(
                    urls[name] + "/payments", connections=conns, seconds=plan.accept_seconds
                )
                used = cpu_seconds(pids[name]) - used
                runs[name].append(r)
                # The server's own CPU per request: what the shared machine's noise moves least.
                cpu[name].append(used / r.requests * 1e6 if r.requests and used else 0.0)
                say(
                    f"accept {conns} connections round {i + 1} {name}: {r.rps:.0f} req/s "
                    f"p50 {r.p50_ms:.1f} ms p99 {r.p99_ms:.1f} ms errors {r.errors}; "
                    f"{cpu[name][-1]:.0f} us CPU/request"
                )
        results.accept[conns] = runs
        results.accept_cpu_us[conns] = cpu
    after = log_lines(group, ["bare", "real"])
    results.settings["log lines written during the accept rounds"] = ", ".join(
        f"{name} {after[name] - before[name]}" for name in ("bare", "real")
    )
    # Bare, bare + one script call (direct / group commit), the API without and with it.
    results.sweep = {name: {} for name in ("bare", "script", "script_gc", "real_nogc", "real")}
    for conns in plan.sweep_connections:
        for name in results.sweep:
            used = cpu_seconds(pids[name])
            r = wrk_mod.run(urls[name] + "/payments", connections=conns, seconds=plan.sweep_seconds)
            used = cpu_seconds(pids[name]) - used
            results.sweep[name][conns] = r
            results.sweep_cpu_us.setdefault(name, {})[conns] = (
                used / r.requests * 1e6 if r.requests and used else 0.0
            )
            say(
                f"sweep {conns:3d} connections {name}: {r.rps:.0f} req/s p99 {r.p99_ms:.1f} ms, "
                f"{results.sweep_cpu_us[name][conns]:.0f} us CPU/request"
            )
    # The profile of the API under the accept load (py-spy, when it can attach).
    out = group.log_dir / "profile.txt"
    lister = wrk_mod.start(
        wrk_mod.wrk_argv(
            urls["real"] + "/payments", connections=32, seconds=plan.profile_seconds + 2
        )
    )
    time.sleep(1)
    ok = bench_profile.record(pids["real"], plan.profile_seconds, out)
    wrk_mod.finish(lister)
    if ok:
        results.profile = bench_profile.table(bench_profile.summarize(out.read_text()))
        say("profiled the API under load")
    else:
        results.profile = ["(no profile: py-spy is missing or may not attach to the API here)"]


def bench_batch(
    plan: Plan, results: Results, urls: dict[str, str], pids: dict[str, int], redis_url: str
) -> None:
    """Payments accepted per second through batches against single requests (bench.batch)."""
    pid = pids["real"]
    redis_pid = int(redis.Redis.from_url(redis_url).info("server")["process_id"])
    results.batch = r = batch.measure(
        urls["real"],
        redis_url,
        lambda: cpu_seconds(pid),
        redis_cpu=lambda: cpu_seconds(redis_pid),
        rounds=plan.batch_rounds,
        seconds=plan.batch_seconds,
        size=plan.batch_size,
    )
    for i, (single, many) in enumerate(zip(r.singles, r.batches, strict=True)):
        say(
            f"batch round {i + 1}: single {single.payments_per_s:.0f} payments/s, batches of "
            f"{r.size} {many.payments_per_s:.0f} payments/s ({r.ratios[i]:.1f}x)"
        )
    say(
        f"batch: {r.round_trips_per_batch:g} Redis round trip(s) per batch of {r.size}, "
        f"{r.round_trips_per_single:g} per single request"
    )


def bench_list(plan: Plan, results: Results, stub: str, urls: dict[str, str]) -> None:
    http("POST", f"{stub}/_bench/latency?ms={plan.list_latency_ms:g}")
    # The very request the gateway sends (limit 20, PaymentIntents expanded), straight to Stripe.
    direct = f"{stub}/v1/charges?customer=cus_bench1&limit=20&expand%5B0%5D=data.payment_intent"
    through = f"{urls['real']}/cus_bench1/payments?limit=20"
    wrk_mod.run(through, connections=1, seconds=1, post=False)  # warm the HTTP pool
    results.list_direct = wrk_mod.run(direct, connections=1, seconds=plan.list_seconds, post=False)
    results.list_api = wrk_mod.run(through, connections=1, seconds=plan.list_seconds, post=False)
    say(
        f"list p50: Stripe stub {results.list_direct.p50_ms:.2f} ms, "
        f"through the API {results.list_api.p50_ms:.2f} ms"
    )
    # Accept alone, then next to many list connections (polite: they honour Retry-After),
    # alternated; on the API with its default list bound, and on one without a bound.
    for name, rounds in (("real", plan.list_rounds), ("real_unbounded", 1)):
        url = urls[name]
        results.under_list[name] = []
        for _ in range(rounds):
            alone = wrk_mod.run(url + "/payments", connections=32, seconds=plan.list_seconds)
            lister = wrk_mod.start(
                wrk_mod.polite_list_argv(
                    f"{url}/cus_bench1/payments?limit=20",
                    connections=plan.list_load_connections,
                    seconds=plan.list_seconds + 1,
                )
            )
            time.sleep(0.5)
            loaded = wrk_mod.run(url + "/payments", connections=32, seconds=plan.list_seconds)
            lists = wrk_mod.finish(lister)
            results.under_list[name].append((alone, loaded, lists))
            say(
                f"{name}: accept alone {alone.rps:.0f} req/s p99 {alone.p99_ms:.1f} ms; with "
                f"{plan.list_load_connections} list connections {loaded.rps:.0f} req/s p99 "
                f"{loaded.p99_ms:.1f} ms; lists {lists.ok} ok, {lists.busy} busy, p99 "
                f"{lists.p99_ms:.1f} ms"
            )


def bench_drain(
    plan: Plan, results: Results, group: ProcessGroup, redis_url: str, stub: str
) -> None:
    env = service_env(redis_url, stub)
    concurrency = int(
        os.environ.get("WORKER_CONCURRENCY", Settings.model_fields["worker_concurrency"].default)
    )
    for latency in plan.drain_latencies_ms:
        for n in plan.drain_workers:
            results.drains.append(
                drain_run(plan, group, redis_url, stub, env, n, latency, concurrency)
            )
    # Scaling where Stripe's latency, not the 2 shared cores, is the limit: few threads per
    # worker, so one worker tops out at SCALING_CONCURRENCY / (2 calls x latency).
    scaling_env = {**env, "WORKER_CONCURRENCY": str(SCALING_CONCURRENCY)}
    for n in plan.drain_workers:
        results.scaling.append(
            drain_run(plan, group, redis_url, stub, scaling_env, n, 200.0, SCALING_CONCURRENCY)
        )
    bench_capped(plan, results, group, redis_url, stub)


def bench_capped(
    plan: Plan, results: Results, group: ProcessGroup, redis_url: str, stub: str
) -> None:
    """Two workers under the default Stripe budget of a sandbox key (its global limit, all
    workers together): about cap / 2 calls per charge; nothing may fail for waiting on the
    budget. Redis cost measured on this run: it is the production path, cap included."""
    env = service_env(redis_url, stub)
    concurrency = int(
        os.environ.get("WORKER_CONCURRENCY", Settings.model_fields["worker_concurrency"].default)
    )
    cap = Settings(environment="test").stripe_limits.global_rps
    results.capped_rps = cap
    capped_env = {**env, "STRIPE_MAX_RPS": f"{cap:g}"}
    count = max(20, int(cap / 2 * plan.capped_seconds))
    results.capped = drain_run(
        plan,
        group,
        redis_url,
        stub,
        capped_env,
        2,
        plan.capped_latency_ms,
        concurrency,
        count=count,
        timeout=plan.capped_seconds * 2 + 60,
        cost=True,
    )


def bench_fairness(
    plan: Plan, results: Results, group: ProcessGroup, redis_url: str, stub: str
) -> None:
    """A calm client behind a greedy client's backlog, under a Stripe cap (bench.fairness)."""
    http("POST", f"{stub}/_bench/latency?ms=50")
    results.fairness = r = fairness.measure(
        group,
        redis_url,
        service_env(redis_url, stub),
        cap=plan.fairness_cap,
        backlog=plan.fairness_backlog,
        calm=plan.fairness_calm,
    )
    say(
        f"fairness: greedy {r.backlog} queued, calm {len(r.latencies)} one a second: p50 "
        f"{r.p50:.1f} s, p90 {r.p90:.1f} s ({r.succeeded} succeeded), greedy left {r.greedy_left}"
    )


def bench_stripe_limit(
    plan: Plan, results: Results, group: ProcessGroup, redis_url: str, stub: str
) -> None:
    """Two workers at Stripe's published live limits, enforced with 429s (bench.stripe_limit)."""
    http("POST", f"{stub}/_bench/latency?ms=50")
    results.stripe_limit = r = stripe_limit.measure(
        group, redis_url, service_env(redis_url, stub), stub, count=plan.limit_count
    )
    say(
        f"drain at Stripe's limit: {r.drain.steady_rate:.1f} charges/s = {r.ratio:.2f}x of the "
        f"binding limit ({r.binding:g}/s), {r.rate_limited} 429s of {r.calls} calls "
        f"({r.drain.succeeded}/{r.drain.count} succeeded)"
    )


def drain_run(
    plan: Plan,
    group: ProcessGroup,
    redis_url: str,
    stub: str,
    env: dict[str, str],
    n: int,
    latency: float,
    concurrency: int,
    *,
    count: int | None = None,
    timeout: float | None = None,
    cost: bool = False,
) -> drain.DrainResult:
    import redis

    http("POST", f"{stub}/_bench/latency?ms={latency:g}")
    client = redis.Redis.from_url(redis_url)
    client.flushdb()  # the accept runs left their messages in the queue
    client.close()
    names = [f"worker-{latency:g}ms-{n}x-{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
    for i, name in enumerate(names):
        group.start(name, celery_worker_argv("-n", f"bench{i}@%h"), env=env)
    for name in names:
        wait_for_log(group.log_dir / f"{name}.log", "ready.")
    if count is None:
        # Two Stripe calls per charge: the bound with `concurrency` threads per worker.
        ideal = n * concurrency / (2 * latency / 1000)
        count = max(40, int(min(ideal, 250 * n) * plan.drain_seconds))
    try:
        r = drain.measure(
            redis_url,
            workers=n,
            latency_ms=latency,
            count=count,
            timeout=timeout or 60 + 4 * plan.drain_seconds,
            run_id=f"drain-{uuid.uuid4().hex[:8]}",
            cost=cost,
        )
    finally:
        for name in names:
            group.stop(name, grace=30)
    say(
        f"drain {n} worker(s) x {concurrency} threads at {latency:g} ms "
        f"(STRIPE_MAX_RPS={env.get('STRIPE_MAX_RPS')}): {r.steady_rate:.1f} charges/s "
        f"({r.succeeded}/{r.count} succeeded, {r.failed} failed, overall {r.overall_rate:.1f}/s)"
    )
    return r


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "nproc": str(affinity or os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wrk": wrk_mod.version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a few seconds of each part")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=ROOT / "docs",
        help="where PERFORMANCE.md and performance.png go (default: docs/)",
    )
    parser.add_argument("--skip-drain", action="store_true")
    parser.add_argument(
        "--only",
        choices=sorted(PARTS),
        help="run this part alone and rewrite only its section of PERFORMANCE.md",
    )
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else Plan()
    try:
        wrk_mod.wrk_binary()
        redis_server_binary()
    except (wrk_mod.WrkMissing, RuntimeError) as exc:
        print(exc, file=sys.stderr)
        return 2

    if args.only:
        return PARTS[args.only](plan, args.output_dir)
    results = Results()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, ProcessGroup(Path(tmp)) as group:
        data = Path(tmp) / "redis"
        data.mkdir()
        with temporary_redis(data, group) as redis_url:
            stub_port = free_port()
            stub_proc = group.start(
                "stripe-stub", python_module("bench.stripe_stub", "--port", str(stub_port))
            )
            wait_for_port(stub_port, proc=stub_proc)
            stub = f"http://127.0.0.1:{stub_port}"
            env = service_env(redis_url, stub)
            say(f"redis {redis_url}, Stripe stub {stub}")
            defaults = Settings(environment="test")
            results.settings.update(
                {
                    "accept and list servers": "STRIPE_MAX_RPS=0 (no worker runs), "
                    "QUEUE_MAX_BACKLOG=100000000, CLIENT_MAX_RPS=0 (one key stands in for many "
                    "clients), LOG_LEVEL INFO (ENVIRONMENT=test), uvicorn's access log off on "
                    "every server",
                    "API": f"ACCEPT_GROUP_COMMIT={defaults.accept_group_commit} (default), "
                    f"LIST_MAX_CONCURRENCY={defaults.list_max_concurrency} (default)",
                }
            )
            with contextlib.ExitStack() as stack:
                urls: dict[str, str] = {}
                pids: dict[str, int] = {}
                for name, (app, extra) in SERVERS.items():
                    urls[name], pids[name] = stack.enter_context(
                        uvicorn(group, name, app, {**env, **extra})
                    )
                bench_accept(plan, results, urls, group, pids)
                bench_batch(plan, results, urls, pids, redis_url)
                bench_list(plan, results, stub, urls)
            if not args.skip_drain:
                bench_drain(plan, results, group, redis_url, stub)
                bench_fairness(plan, results, group, redis_url, stub)
                bench_stripe_limit(plan, results, group, redis_url, stub)
    elapsed = time.time() - started
    command = "make bench" if not args.smoke else "python -m bench --smoke"
    text = report.render(results, plan, machine(), command=command, elapsed=elapsed)
    print(report.table(results, plan))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    png = args.output_dir / "performance.png"
    if report.plot(results, plan, png):
        say(f"wrote {png}")
    out = args.output_dir / "PERFORMANCE.md"
    kept = out.read_text().partition(report.KEPT_MARKER) if out.exists() else ("", "", "")
    if kept[1]:  # sections written by hand below the marker survive a new run
        text = text.rstrip("\n") + "\n\n" + kept[1] + kept[2]
    out.write_text(text)
    say(f"wrote {args.output_dir / 'PERFORMANCE.md'} in {elapsed:.0f} s")
    return 0


def only_batch(plan: Plan, output_dir: Path) -> int:
    """The batch part alone: its own Redis and one API server, then its section of the report
    written over the one already there (the rest of the file is kept)."""
    results = Results()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, ProcessGroup(Path(tmp)) as group:
        data = Path(tmp) / "redis"
        data.mkdir()
        with temporary_redis(data, group) as redis_url:
            env = service_env(redis_url, "http://127.0.0.1:9")  # accepts make no Stripe call
            with uvicorn(group, "real", "api.main:app", env) as (url, pid):
                warm_up(url)
                bench_batch(plan, results, {"real": url}, {"real": pid}, redis_url)
    section = report.batch_section(results)
    print(section)
    out = output_dir / "PERFORMANCE.md"
    output_dir.mkdir(parents=True, exist_ok=True)
    out.write_text(report.with_section(out.read_text() if out.exists() else "", section))
    say(f"wrote the batch section of {out}")
    return 0


def _only_part_with_stub(
    output_dir: Path,
    run: Callable[[Results, ProcessGroup, str, str], None],
    section_of: Callable[[Results], str],
    merge: Callable[[str, str], str],
    what: str,
) -> int:
    """One bench part alone on its own Redis and Stripe stub, then its section of the report
    written over the one already there (the rest is kept)."""
    results = Results()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, ProcessGroup(Path(tmp)) as group:
        data = Path(tmp) / "redis"
        data.mkdir()
        with temporary_redis(data, group) as redis_url:
            stub_port = free_port()
            stub_proc = group.start(
                "stripe-stub", python_module("bench.stripe_stub", "--port", str(stub_port))
            )
            wait_for_port(stub_port, proc=stub_proc)
            run(results, group, redis_url, f"http://127.0.0.1:{stub_port}")
    section = section_of(results)
    print(section)
    out = output_dir / "PERFORMANCE.md"
    output_dir.mkdir(parents=True, exist_ok=True)
    document = out.read_text() if out.exists() else ""
    out.write_text(merge(document, section))
    say(f"wrote the {what} of {out}")
    return 0


def only_cost(plan: Plan, output_dir: Path) -> int:
    """What a payment costs Redis alone (the capped drain with its measurement, two workers)."""
    return _only_part_with_stub(
        output_dir,
        lambda results, group, redis_url, stub: bench_capped(plan, results, group, redis_url, stub),
        report.cost_section,
        report.with_cost_section,
        "Redis cost section",
    )


def only_stripe_limit(plan: Plan, output_dir: Path) -> int:
    """The drain at Stripe's limit alone (the stub behind the limiting proxy)."""
    return _only_part_with_stub(
        output_dir,
        lambda results, group, redis_url, stub: bench_stripe_limit(
            plan, results, group, redis_url, stub
        ),
        report.stripe_limit_section,
        lambda document, section: report.with_section(
            document, section, report.LIMIT_BEGIN, report.LIMIT_END
        ),
        "section on the drain at Stripe's limit",
    )


PARTS = {"batch": only_batch, "cost": only_cost, "stripe-limit": only_stripe_limit}


if __name__ == "__main__":
    sys.exit(main())
