"""The benchmark's table (printed and written to docs/PERFORMANCE.md) and its plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.__main__ import Plan, Results
    from bench.wrk import WrkResult

ACCEPT_RATIO_GOAL = 0.5
ACCEPT_P99_GOAL_MS = 50.0
DRAIN_GOAL = 150.0  # charges/s, one worker, 200 ms per Stripe call
SCALING_GOAL = 1.8
LIST_OVERHEAD_GOAL_MS = 5.0


def _met(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def accept_summary(results: Results) -> tuple[float, float, float, float, list[float]]:
    """Median req/s of bare and real, median p99 of real, ratio, per-round ratios."""
    bare = results.accept.get("bare", [])
    real = results.accept.get("real", [])
    rounds = [r.rps / b.rps for b, r in zip(bare, real, strict=False) if b.rps]
    bare_rps = _median([r.rps for r in bare])
    real_rps = _median([r.rps for r in real])
    p99 = _median([r.p99_ms for r in real])
    ratio = real_rps / bare_rps if bare_rps else 0.0
    return bare_rps, real_rps, p99, ratio, rounds


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _wrk_row(name: str, runs: list[WrkResult]) -> str:
    return _row(
        [
            name,
            f"{_median([r.rps for r in runs]):.0f}",
            f"{_median([r.p50_ms for r in runs]):.1f}",
            f"{_median([r.p99_ms for r in runs]):.1f}",
            str(sum(r.errors for r in runs)),
        ]
    )


def table(results: Results, plan: Plan) -> str:
    lines: list[str] = []
    _, _, p99, ratio, rounds = accept_summary(results)
    lines += [
        f"Accept: {plan.accept_connections} connections, unique Idempotency-Key per request, "
        f"no worker; median of {plan.accept_rounds} alternated {plan.accept_seconds:g} s runs",
        "",
        _row(["endpoint", "req/s", "p50 ms", "p99 ms", "errors"]),
        _row(["---"] * 5),
        _wrk_row("bare FastAPI POST (pydantic body, 202)", results.accept.get("bare", [])),
        _wrk_row("POST /payments", results.accept.get("real", [])),
        "",
        f"ratio POST /payments / bare: **{ratio:.2f}** "
        f"(per round: {', '.join(f'{x:.2f}' for x in rounds)}); "
        f"goal >= {ACCEPT_RATIO_GOAL} with p99 <= {ACCEPT_P99_GOAL_MS:g} ms: "
        f"{_met(ratio >= ACCEPT_RATIO_GOAL and p99 <= ACCEPT_P99_GOAL_MS)}",
        "",
    ]
    if results.drains:
        latencies = sorted({d.latency_ms for d in results.drains})
        workers = sorted({d.workers for d in results.drains})
        lines += [
            "Drain: charges/s completed (steady state, 10th-90th percent of completions); "
            "the Stripe stub answers every call after a fixed latency; a charge makes 2 calls",
            "",
            _row(["Stripe latency", *[f"{n} worker(s)" for n in workers], "2 / 1"]),
            _row(["---"] * (len(workers) + 2)),
        ]
        for latency in latencies:
            rates = {d.workers: d for d in results.drains if d.latency_ms == latency}
            cells = [
                f"{rates[n].steady_rate:.1f} ({rates[n].succeeded}/{rates[n].count} ok)"
                if n in rates
                else "-"
                for n in workers
            ]
            scale = (
                f"{rates[2].steady_rate / rates[1].steady_rate:.2f}x"
                if 1 in rates and 2 in rates and rates[1].steady_rate
                else "-"
            )
            lines.append(_row([f"{latency:g} ms", *cells, scale]))
        at200 = {d.workers: d.steady_rate for d in results.drains if d.latency_ms == 200}
        if 1 in at200:
            lines += [
                "",
                f"one worker at 200 ms: {at200[1]:.1f} charges/s; goal >= {DRAIN_GOAL:g}: "
                f"{_met(at200[1] >= DRAIN_GOAL)}",
            ]
        if 1 in at200 and 2 in at200 and at200[1]:
            lines.append(
                f"two workers / one at 200 ms with the default threads: "
                f"{at200[2] / at200[1]:.2f}x (both workers and the stub share 2 cores: CPU-bound)"
            )
        lines.append("")
    scaling = {d.workers: d for d in results.scaling}
    if 1 in scaling and 2 in scaling and scaling[1].steady_rate:
        ratio = scaling[2].steady_rate / scaling[1].steady_rate
        lines += [
            "Scaling where Stripe's latency is the limit: WORKER_CONCURRENCY=16 at 200 ms, so "
            "one worker can at most 16 / (2 calls x 0.2 s) = 40 charges/s and the cores stay "
            "mostly idle",
            "",
            _row(["", "1 worker", "2 workers", "2 / 1"]),
            _row(["---"] * 4),
            _row(
                [
                    "charges/s",
                    f"{scaling[1].steady_rate:.1f} ({scaling[1].succeeded}/{scaling[1].count} ok)",
                    f"{scaling[2].steady_rate:.1f} ({scaling[2].succeeded}/{scaling[2].count} ok)",
                    f"{ratio:.2f}x",
                ]
            ),
            "",
            f"two workers / one when latency is the limit: {ratio:.2f}x; goal >= {SCALING_GOAL}: "
            f"{_met(ratio >= SCALING_GOAL)}",
            "",
        ]
    if results.list_direct and results.list_api:
        d, a = results.list_direct, results.list_api
        overhead = a.p50_ms - d.p50_ms
        lines += [
            f"List: GET /{{customer}}/payments?limit=20, Stripe stub {plan.list_latency_ms:g} ms, "
            "1 connection",
            "",
            _row(["", "req/s", "p50 ms", "mean ms", "p99 ms"]),
            _row(["---"] * 5),
            _row(
                [
                    "GET /v1/charges on the stub",
                    f"{d.rps:.1f}",
                    f"{d.p50_ms:.2f}",
                    f"{d.mean_ms:.2f}",
                    f"{d.p99_ms:.2f}",
                ]
            ),
            _row(
                [
                    "through the API",
                    f"{a.rps:.1f}",
                    f"{a.p50_ms:.2f}",
                    f"{a.mean_ms:.2f}",
                    f"{a.p99_ms:.2f}",
                ]
            ),
            "",
            f"list overhead (p50): **{overhead:.2f} ms** (mean {a.mean_ms - d.mean_ms:.2f} ms); "
            f"goal <= {LIST_OVERHEAD_GOAL_MS:g} ms: {_met(overhead <= LIST_OVERHEAD_GOAL_MS)}",
        ]
    if results.accept_alone and results.accept_under_list and results.list_under_load:
        alone, loaded, lists = (
            results.accept_alone,
            results.accept_under_list,
            results.list_under_load,
        )
        lines += [
            f"accept alone: {alone.rps:.0f} req/s, p99 {alone.p99_ms:.1f} ms; with "
            f"{plan.list_load_connections} concurrent list connections "
            f"({lists.rps:.0f} lists/s, p99 {lists.p99_ms:.1f} ms): {loaded.rps:.0f} req/s, "
            f"p99 {loaded.p99_ms:.1f} ms",
        ]
    return "\n".join(lines)


def render(
    results: Results, plan: Plan, machine: dict[str, str], *, command: str, elapsed: float
) -> str:
    sweep_lines = [
        _row(["connections", "bare req/s", "bare p99 ms", "real req/s", "real p99 ms", "ratio"]),
        _row(["---"] * 6),
    ]
    bare, real = results.sweep.get("bare", {}), results.sweep.get("real", {})
    for conns in sorted(bare):
        if conns in real:
            b, r = bare[conns], real[conns]
            sweep_lines.append(
                _row(
                    [
                        str(conns),
                        f"{b.rps:.0f}",
                        f"{b.p99_ms:.1f}",
                        f"{r.rps:.0f}",
                        f"{r.p99_ms:.1f}",
                        f"{r.rps / b.rps:.2f}" if b.rps else "-",
                    ]
                )
            )
    return "\n".join(
        [
            "# Performance",
            "",
            "Written by `make bench` (`python -m bench`, code in `bench/`); do not edit by hand.",
            "",
            f"- command: `{command}` ({elapsed:.0f} s)",
            f"- machine: {machine['nproc']} CPUs, {machine['cpu']}; {machine['platform']}",
            f"- Python {machine['python']}; load generator: {machine['wrk']}",
            "",
            "Everything runs on this one machine, over loopback: a redis-server of its own (AOF "
            "`appendfsync everysec`, as `make run`), a constant-latency Stripe stub "
            "(`bench/stripe_stub.py`, aiohttp), uvicorn with the API's flags "
            "(`devtools.processes.api_argv`) for both the real API and the bare yardstick "
            "(`bench/bare_app.py`), and workers started by `celery -A worker.celery_app worker`. "
            "The machine is shared and noisy: the bare endpoint and the real one are measured "
            "side by side, alternated, in the same run, and the ratios are what to compare.",
            "",
            "## Results",
            "",
            table(results, plan),
            "",
            "## Accept versus offered load",
            "",
            "wrk keeps a fixed number of connections busy (closed loop): more connections, more "
            "offered load.",
            "",
            *sweep_lines,
            "",
            "![throughput and p99 versus offered load and worker count](performance.png)",
            "",
            "## How it is measured",
            "",
            "- Accept: `wrk -t1 -c32` with `bench/wrk.lua`, which gives every request its own "
            "`Idempotency-Key` (so each one claims a key, writes a record and enqueues); no "
            "worker runs, so the queue only grows.",
            "- Drain: the workers are started and ready first; then the payments are accepted "
            "through `PaymentService.accept` (the API's own Lua script) and every final status "
            "published on `payments:events` is timestamped. The rate is taken between the 10th "
            "and the 90th percent of completions. Each charge asks Stripe for the customer's "
            "default payment method, then creates and confirms the PaymentIntent: two calls.",
            "- List: `wrk -c1` on the stub's `GET /v1/charges` (the gateway's very request) and "
            "on the API's `GET /cus_bench1/payments?limit=20`; the overhead is the difference of "
            "the medians. Then the accept load runs alone and next to many list connections.",
            "",
        ]
    )


def plot(results: Results, plan: Plan, path: Path) -> bool:
    """docs/performance.png; False (and nothing written) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[bench] matplotlib is not installed: no plot")
        return False
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.5))
    for name, style in (("bare", "o--"), ("real", "s-")):
        runs = results.sweep.get(name, {})
        conns = sorted(runs)
        label = "bare FastAPI" if name == "bare" else "POST /payments"
        ax1.plot(conns, [runs[c].rps for c in conns], style, label=label)
        ax2.plot(conns, [runs[c].p99_ms for c in conns], style, label=label)
    ax1.set(xlabel="concurrent connections (offered load)", ylabel="requests/s", title="Accept")
    ax2.set(xlabel="concurrent connections (offered load)", ylabel="p99 ms", title="Accept p99")
    ax2.axhline(ACCEPT_P99_GOAL_MS, color="grey", linestyle=":", label="goal p99")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend()
    for latency in sorted({d.latency_ms for d in results.drains}):
        points = sorted(
            (d.workers, d.steady_rate) for d in results.drains if d.latency_ms == latency
        )
        ax3.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            "o-",
            label=f"Stripe {latency:g} ms/call",
        )
    if results.drains:
        ax3.axhline(DRAIN_GOAL, color="grey", linestyle=":", label="goal, 1 worker at 200 ms")
        ax3.set_xticks(sorted({d.workers for d in results.drains}))
    ax3.set(xlabel="worker processes", ylabel="charges/s", title="Drain")
    ax3.grid(alpha=0.3)
    ax3.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
