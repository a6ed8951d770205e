"""The benchmark's table (printed and written to docs/PERFORMANCE.md) and its plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import profile as bench_profile
from bench import redis_cost

if TYPE_CHECKING:
    from bench.__main__ import Plan, Results
    from bench.drain import DrainResult
    from bench.wrk import WrkResult

# Everything below this line in docs/PERFORMANCE.md is written by hand (other benchmarks, such
# as bench/replicated.py) and kept when make bench writes the file again.
KEPT_MARKER = "<!-- Written by hand below this line; make bench keeps it. -->"

ACCEPT_RATIO_GOAL = 0.5
ACCEPT_P99_GOAL_MS = 50.0
UNDER_LIST_GOAL = 0.8
DRAIN_GOAL = 150.0  # charges/s, one worker, 200 ms per Stripe call
SCALING_GOAL = 1.8
LIST_OVERHEAD_GOAL_MS = 5.0
FAIRNESS_GOAL_P90 = 15.0  # seconds, a calm client's payments behind 1,000 of a greedy one's
BATCH_GOAL = 10.0  # payments accepted per second, batches of 100 over single requests
# The batch part's section is between these, so that `python -m bench --only batch` rewrites it
# alone.
BATCH_BEGIN = "<!-- batch part: python -m bench --only batch rewrites it -->"
BATCH_END = "<!-- end of the batch part -->"
COST_BEGIN = "<!-- Redis cost part: python -m bench --only cost rewrites it -->"
COST_END = "<!-- end of the Redis cost part -->"
LIMIT_BEGIN = "<!-- stripe-limit part: python -m bench --only stripe-limit rewrites it -->"
LIMIT_END = "<!-- end of the stripe-limit part -->"
COST_HEADING = "### What a payment costs Redis"

LABELS = {
    "bare": "bare FastAPI POST",
    "script": "bare + 1 script call",
    "script_gc": "bare + 1 script call, group commit",
    "real_nogc": "POST /payments, group commit off",
    "real": "POST /payments",
}


def _met(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def accept_summary(results: Results, conns: int) -> tuple[float, float, float, list[float]]:
    """Median ratio of the alternated rounds, median p99 of the real API, req/s, per round."""
    runs = results.accept.get(conns, {})
    bare, real = runs.get("bare", []), runs.get("real", [])
    rounds = [r.rps / b.rps for b, r in zip(bare, real, strict=False) if b.rps]
    return (
        _median(rounds),
        _median([r.p99_ms for r in real]),
        _median([r.rps for r in real]),
        rounds,
    )


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


def _accept_lines(results: Results, plan: Plan) -> list[str]:
    lines = [
        "### Accept against the honest yardstick",
        "",
        f"Unique Idempotency-Key per request, no worker; {plan.accept_rounds} alternated "
        f"{plan.accept_seconds:g} s rounds per connection count (bare, API, bare, API, ...); the "
        "ratio is the median of the rounds' ratios.",
        "",
    ]
    for conns in sorted(results.accept):
        runs = results.accept[conns]
        ratio, p99, _, rounds = accept_summary(results, conns)
        goal_ratio = ACCEPT_RATIO_GOAL if conns == 32 else None
        verdict = (
            f"goal >= {ACCEPT_RATIO_GOAL} with p99 <= {ACCEPT_P99_GOAL_MS:g} ms: "
            f"{_met(ratio >= ACCEPT_RATIO_GOAL and p99 <= ACCEPT_P99_GOAL_MS)}"
            if goal_ratio
            else f"goal p99 <= {ACCEPT_P99_GOAL_MS:g} ms: {_met(p99 <= ACCEPT_P99_GOAL_MS)}"
        )
        lines += [
            f"**{conns} connections**",
            "",
            _row(["endpoint", "req/s", "p50 ms", "p99 ms", "errors"]),
            _row(["---"] * 5),
            _wrk_row(LABELS["bare"] + " (pydantic body, 202)", runs.get("bare", [])),
            _wrk_row(LABELS["real"], runs.get("real", [])),
            "",
            f"ratio POST /payments / bare at {conns} connections: **{ratio:.2f}** (per round: "
            f"{', '.join(f'{x:.2f}' for x in rounds)}), p99 {p99:.1f} ms (median of the rounds; "
            f"per round: {', '.join(f'{r.p99_ms:.1f}' for r in runs.get('real', []))}); "
            f"{verdict}",
            "",
        ]
        cpu = results.accept_cpu_us.get(conns, {})
        bare_us, real_us = _median(cpu.get("bare", [])), _median(cpu.get("real", []))
        if bare_us and real_us:
            lines += [
                f"Server CPU per request (the process's own user+system time / requests, "
                f"median of the rounds; less moved by the other tenants of the machine): bare "
                f"{bare_us:.0f} us, POST /payments {real_us:.0f} us; ratio bare / real "
                f"**{bare_us / real_us:.2f}**",
                "",
            ]
    return lines


def _sweep_lines(results: Results) -> list[str]:
    sweep = results.sweep
    if not sweep.get("bare"):
        return []
    lines = [
        "### Group commit: where it pays",
        "",
        "One run per cell (closed loop, wrk keeps the connections busy). The micro-benchmark is "
        "the bare endpoint plus one small Lua script call (`bench/script_app.py`), sent "
        "directly or through `api/group_commit.py`; then the API with `ACCEPT_GROUP_COMMIT` "
        "off and on. Gain = with / without. Then the same cells as server CPU per request "
        "(microseconds of the server process's own CPU), which the machine's other tenants "
        "move much less than throughput: a gain there is CPU the group commit saved.",
        "",
        _row(
            [
                "connections",
                "bare req/s",
                "+script",
                "+script, grouped",
                "gain",
                "API, off",
                "API, on",
                "gain",
                "API on / bare",
                "API on p99 ms",
            ]
        ),
        _row(["---"] * 10),
    ]
    for conns in sorted(sweep["bare"]):
        cell = {name: runs.get(conns) for name, runs in sweep.items()}
        if any(v is None for v in cell.values()):
            continue
        b, s, sg, rn, r = (
            cell[name] for name in ("bare", "script", "script_gc", "real_nogc", "real")
        )
        if b is None or s is None or sg is None or rn is None or r is None:
            continue
        lines.append(
            _row(
                [
                    str(conns),
                    f"{b.rps:.0f}",
                    f"{s.rps:.0f}",
                    f"{sg.rps:.0f}",
                    f"{sg.rps / s.rps:.2f}x" if s.rps else "-",
                    f"{rn.rps:.0f}",
                    f"{r.rps:.0f}",
                    f"{r.rps / rn.rps:.2f}x" if rn.rps else "-",
                    f"{r.rps / b.rps:.2f}" if b.rps else "-",
                    f"{r.p99_ms:.1f}",
                ]
            )
        )
    cpu = results.sweep_cpu_us
    if cpu.get("bare"):
        lines += [
            "",
            _row(
                [
                    "connections",
                    "bare us/req",
                    "+script",
                    "+script, grouped",
                    "saved",
                    "API, off",
                    "API, on",
                    "saved",
                    "bare / API on",
                ]
            ),
            _row(["---"] * 9),
        ]
        for conns in sorted(cpu["bare"]):
            c = {name: cpu.get(name, {}).get(conns, 0.0) for name in LABELS}
            if not all(c.values()):
                continue
            lines.append(
                _row(
                    [
                        str(conns),
                        f"{c['bare']:.0f}",
                        f"{c['script']:.0f}",
                        f"{c['script_gc']:.0f}",
                        f"{1 - c['script_gc'] / c['script']:.0%}",
                        f"{c['real_nogc']:.0f}",
                        f"{c['real']:.0f}",
                        f"{1 - c['real'] / c['real_nogc']:.0%}",
                        f"{c['bare'] / c['real']:.2f}",
                    ]
                )
            )
    lines.append("")
    return lines


def _list_lines(results: Results, plan: Plan) -> list[str]:
    lines: list[str] = ["### Reads next to accepts", ""]
    if results.list_direct and results.list_api:
        d, a = results.list_direct, results.list_api
        overhead = a.p50_ms - d.p50_ms
        lines += [
            f"List alone: GET /{{customer}}/payments?limit=20, Stripe stub "
            f"{plan.list_latency_ms:g} ms, 1 connection",
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
            "",
        ]
    if results.under_list:
        lines += [
            f"Accept (32 connections) alone, then next to {plan.list_load_connections} list "
            "connections that honour Retry-After (`bench/wrk_list.lua`), alternated; "
            f"{plan.list_seconds:g} s each.",
            "",
            _row(
                [
                    "API",
                    "accept alone req/s",
                    "accept with lists req/s",
                    "ratio",
                    "accept p99 ms with lists",
                    "lists served/s",
                    "lists refused 503/s",
                    "list p99 ms",
                ]
            ),
            _row(["---"] * 8),
        ]
        for name, rounds in results.under_list.items():
            label = (
                "LIST_MAX_CONCURRENCY default"
                if name == "real"
                else "no list bound (LIST_MAX_CONCURRENCY=1024)"
            )
            alone = _median([r[0].rps for r in rounds])
            loaded = _median([r[1].rps for r in rounds])
            ratio = _median([r[1].rps / r[0].rps for r in rounds if r[0].rps])
            lists = [r[2] for r in rounds]
            lines.append(
                _row(
                    [
                        label,
                        f"{alone:.0f}",
                        f"{loaded:.0f}",
                        f"**{ratio:.2f}**" if name == "real" else f"{ratio:.2f}",
                        f"{_median([r[1].p99_ms for r in rounds]):.1f}",
                        f"{_median([(x.ok or 0) / x.seconds for x in lists]):.0f}",
                        f"{_median([(x.busy or 0) / x.seconds for x in lists]):.0f}",
                        f"{_median([x.p99_ms for x in lists]):.1f}",
                    ]
                )
            )
        ratio = under_list_ratio(results)
        lines += [
            "",
            f"accept with lists / alone, default bound: **{ratio:.2f}**; goal >= "
            f"{UNDER_LIST_GOAL}: {_met(ratio >= UNDER_LIST_GOAL)}",
            "",
        ]
    return lines


def under_list_ratio(results: Results) -> float:
    rounds = results.under_list.get("real", [])
    return _median([r[1].rps / r[0].rps for r in rounds if r[0].rps])


def _drain_cell(d: DrainResult) -> str:
    return f"{d.steady_rate:.1f} ({d.succeeded}/{d.count} ok, {d.failed} failed)"


def _drain_lines(results: Results, plan: Plan) -> list[str]:
    lines: list[str] = []
    if results.drains:
        latencies = sorted({d.latency_ms for d in results.drains})
        workers = sorted({d.workers for d in results.drains})
        lines += [
            "### Drain",
            "",
            "Charges/s completed (steady state, 10th-90th percent of completions), Stripe cap "
            "off (STRIPE_MAX_RPS=0); the Stripe stub answers every call after a fixed latency; "
            "a charge makes 2 calls",
            "",
            _row(["Stripe latency", *[f"{n} worker(s)" for n in workers], "2 / 1"]),
            _row(["---"] * (len(workers) + 2)),
        ]
        for latency in latencies:
            rates = {d.workers: d for d in results.drains if d.latency_ms == latency}
            cells = [_drain_cell(rates[n]) if n in rates else "-" for n in workers]
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
                f"one worker at 200 ms, cap off: {at200[1]:.1f} charges/s; goal >= "
                f"{DRAIN_GOAL:g}: {_met(at200[1] >= DRAIN_GOAL)}",
            ]
        lines.append("")
    scaling = {d.workers: d for d in results.scaling}
    if 1 in scaling and 2 in scaling and scaling[1].steady_rate:
        ratio = scaling[2].steady_rate / scaling[1].steady_rate
        lines += [
            "Scaling where Stripe's latency is the limit: WORKER_CONCURRENCY=16 at 200 ms, cap "
            "off, so one worker can at most 16 / (2 calls x 0.2 s) = 40 charges/s",
            "",
            _row(["", "1 worker", "2 workers", "2 / 1"]),
            _row(["---"] * 4),
            _row(["charges/s", _drain_cell(scaling[1]), _drain_cell(scaling[2]), f"{ratio:.2f}x"]),
            "",
            f"two workers / one when latency is the limit: {ratio:.2f}x; goal >= {SCALING_GOAL}: "
            f"{_met(ratio >= SCALING_GOAL)}",
            "",
        ]
    c = results.capped
    if c is not None:
        expected = results.capped_rps / 2
        lines += [
            f"Two workers under the default Stripe cap (STRIPE_MAX_RPS={results.capped_rps:g}, "
            f"all workers together), Stripe stub {c.latency_ms:g} ms, {c.count} payments "
            f"(about {plan.capped_seconds:g} s at the cap)",
            "",
            _row(["", "charges/s (steady)", "overall", "succeeded", "failed", "not final"]),
            _row(["---"] * 6),
            _row(
                [
                    "2 workers, default cap",
                    f"{c.steady_rate:.1f}",
                    f"{c.overall_rate:.1f}",
                    str(c.succeeded),
                    str(c.failed),
                    str(c.count - c.succeeded - c.failed),
                ]
            ),
            "",
            f"expected about cap / 2 calls = {expected:g} charges/s with nothing failed: "
            f"{_met(c.failed == 0 and c.succeeded == c.count and c.steady_rate <= expected * 1.1 and c.steady_rate >= expected * 0.8)}",  # noqa: E501
            "",
        ]
    return lines


def cost_section(results: Results) -> str:
    """The Redis cost part's section, between its markers ("" when it did not run)."""
    lines = _cost_lines(results)
    return "\n".join([COST_BEGIN, *lines, COST_END, ""]) if lines else ""


def with_cost_section(document: str, section: str) -> str:
    """``document`` with the Redis cost section replaced by ``section``: between its markers,
    or, in a report written before they existed, from its heading to the next part."""
    before, begin, rest = document.partition(COST_BEGIN)
    if begin:
        _, end, after = rest.partition(COST_END)
        if end:
            return before + section.rstrip("\n") + after
    head, heading, tail = document.partition(COST_HEADING)
    if not heading:
        return document.rstrip("\n") + "\n\n" + section
    ends = [i for i in (tail.find("\n" + BATCH_BEGIN), tail.find("\n### ")) if i >= 0]
    after = tail[min(ends) + 1 :] if ends else ""
    return head + section + "\n" + after


def _cost_lines(results: Results) -> list[str]:
    c = results.capped
    cost = c.cost if c is not None else None
    if cost is None:
        return []
    lines = [
        COST_HEADING,
        "",
        f"Measured on the capped drain run above ({cost.payments} payments, accepted with the "
        "API's accept script, charged by two workers with the default cap, until kombu's "
        "`unacked` was empty): `INFO commandstats`/`INFO stats` before and after, `MONITOR` "
        "meanwhile. The workers' background polling while idle was "
        f"{cost.idle_commands_per_s:.1f} commands/s (included below, over "
        f"{cost.seconds:.0f} s).",
        "",
        _row(["per payment", "value"]),
        _row(["---", "---"]),
        _row(
            [
                "commands Redis ran (commandstats; scripts' inner calls included)",
                f"{cost.commands:.1f}",
            ]
        ),
        _row(["commands clients sent (MONITOR)", f"{cost.sent:.1f}"]),
        _row(["round trips (socket reads Redis processed)", f"{cost.round_trips:.1f}"]),
        _row(
            [
                "bytes per queued payment (MEMORY USAGE of the queue / its length)",
                f"{cost.queued_bytes:.0f}",
            ]
        ),
        _row(
            [
                "bytes kept per payment once charged (the keys holding its id, and the "
                "list indexes)",
                f"{cost.kept_total:.0f}",
            ]
        ),
        _row(
            [
                "of which GET /payments' indexes: commands run inside the scripts",
                f"{cost.index_commands:.1f} ("
                + ", ".join(f"{n} {c:.2f}" for n, c in cost.index_by_command)
                + ")",
            ]
        ),
        _row(
            [
                "of which GET /payments' indexes: bytes kept",
                f"{cost.kept_bytes.get(redis_cost.INDEX_KIND, 0.0):.0f}",
            ]
        ),
        "",
        "By command (per payment; sent by a client, and run inside a Lua script):",
        "",
        _row(["command", "sent", "in scripts"]),
        _row(["---"] * 3),
    ]
    for name, sent, lua in cost.by_command:
        if sent + lua >= 0.05:
            lines.append(_row([name, f"{sent:.2f}", f"{lua:.2f}"]))
    lines += [
        "",
        "HELLO, SUBSCRIBE, MEMORY, SCRIPT, HLEN and the like are the benchmark's own "
        "connections and probes; BRPOP, ZRANGE and the MULTI/EXEC pairs around kombu's "
        "`unacked` bookkeeping are Celery's transport.",
        "",
        "Bytes kept per payment once charged, by key (keys holding a payment id):",
        "",
        _row(["key", "bytes / payment"]),
        _row(["---"] * 2),
    ]
    for kind, size in cost.kept_bytes.items():
        lines.append(_row([f"`{kind}`", f"{size:.0f}"]))
    fixed = ", ".join(f"`{k}` {v}" for k, v in cost.fixed_bytes.items())
    lines += [
        "",
        f"Keys of no single payment (bytes, whatever the number of payments): {fixed}",
        "",
    ]
    return lines


def _fairness_lines(results: Results) -> list[str]:
    f = results.fairness
    if f is None:
        return []
    calm = len(f.latencies)
    return [
        "### Fairness: a calm client behind a greedy client's backlog",
        "",
        f"One worker (default pool), STRIPE_MAX_RPS={f.cap:g}, Stripe stub 50 ms; client greedy "
        f"queues {f.backlog} payments at once (8 connections), then client calm sends {calm}, "
        "one a second, each waiting for its outcome (`?wait=30`): seconds from its request to "
        "its outcome",
        "",
        _row(["calm p50", "calm p90", "calm max", "succeeded", "greedy still queued"]),
        _row(["---"] * 5),
        _row(
            [
                f"{f.p50:.1f} s",
                f"{f.p90:.1f} s",
                f"{max(f.latencies, default=0.0):.1f} s",
                f"{f.succeeded}/{calm}",
                str(f.greedy_left),
            ]
        ),
        "",
        f"calm p90 <= {FAIRNESS_GOAL_P90:g} s while greedy still has a backlog: "
        f"{_met(f.p90 <= FAIRNESS_GOAL_P90 and f.succeeded == calm and f.greedy_left > 0)}",
        "",
    ]


def _batch_round_row(name: str, rounds: list[Any]) -> str:
    return _row(
        [
            name,
            f"{_median([r.payments_per_s for r in rounds]):.0f}",
            f"{_median([r.requests_per_s for r in rounds]):.0f}",
            f"{_median([r.p50_ms for r in rounds]):.1f}",
            f"{_median([r.p99_ms for r in rounds]):.1f}",
            f"{_median([r.cpu_us_per_payment for r in rounds]):.0f} us",
            f"{_median([r.redis_cpu_us_per_payment for r in rounds]):.0f} us",
            str(sum(r.errors for r in rounds)),
        ]
    )


def _batch_cpu_lines(b: Any) -> list[str]:
    """What bounds the ratio on this machine: the API's and Redis's CPU per payment, which
    share its cores."""
    if not b.parallel_capacity:
        return []
    api = [_median([r.cpu_us_per_payment for r in rs]) for rs in (b.singles, b.batches)]
    red = [_median([r.redis_cpu_us_per_payment for r in rs]) for rs in (b.singles, b.batches)]
    if not all(api) or not all(red):
        return []
    return [
        "The API, Redis and wrk share this machine: two CPU-bound processes at once did "
        f"{b.parallel_capacity:.2f}x the work of one (2.00 on two free cores). So a payment "
        "costs the sum of the API's and Redis's CPU for it: "
        f"{api[0] + red[0]:.0f} us single, {api[1] + red[1]:.0f} us in a batch, "
        f"{(api[0] + red[0]) / (api[1] + red[1]):.1f}x; the API's CPU alone "
        f"{api[0] / api[1]:.1f}x, Redis's alone {red[0] / red[1]:.1f}x (medians of the rounds).",
        "",
    ]


def batch_section(results: Results) -> str:
    """The batch part's section, between its markers ("" when it did not run)."""
    b = results.batch
    if b is None:
        return ""
    lines = [
        BATCH_BEGIN,
        "### Batches: many payments in one request",
        "",
        f"One API process (the real one above; ACCEPT_GROUP_COMMIT=true, its default; "
        "CLIENT_MAX_RPS=0, QUEUE_MAX_BACKLOG=100000000, LOG_LEVEL INFO, no worker), "
        f"{len(b.singles)} alternated {b.seconds:g} s rounds: `POST /payments` with a unique "
        f"`Idempotency-Key` a request on {b.single_connections} connections, then "
        f"`POST /payments/batch` with {b.size} payments a request (each its own "
        f"`idempotency_key`) on {b.batch_connections} connections. Payments accepted are "
        "Redis's own count (`payments:accepted`); errors are failed requests and items not "
        "accepted.",
        "",
        _row(
            [
                "path",
                "payments accepted/s",
                "requests/s",
                "p50 ms",
                "p99 ms",
                "API CPU per payment",
                "Redis CPU per payment",
                "errors",
            ]
        ),
        _row(["---"] * 8),
        _batch_round_row("`POST /payments`", b.singles),
        _batch_round_row(f"`POST /payments/batch`, {b.size} a batch", b.batches),
        "",
        f"batches / single requests, payments accepted per second: **{b.ratio:.1f}x** (per "
        f"round: {', '.join(f'{x:.1f}' for x in b.ratios)}); goal >= {BATCH_GOAL:g}x: "
        f"{_met(b.ratio >= BATCH_GOAL)}",
        "",
        *_batch_cpu_lines(b),
        f"Redis's time in the accept script, alone (`INFO commandstats` around each of the same "
        f"20 requests): **{b.batch_script_us:.0f} us** a payment in a batch of {b.size}, "
        f"{b.single_script_us:.0f} us a single `POST /payments`.",
        "",
        f"Redis round trips per batch of {b.size}: **{b.round_trips_per_batch:g}** (a single "
        f"`POST /payments`: {b.round_trips_per_single:g}), the median of "
        "20 sent one at a time to the app built in the benchmark's process, counted at "
        "redis-py's connections (each request or pipeline written is one round trip). Redis "
        f"read the batch's one script call in {b.reads_per_batch:g} socket reads (it carries "
        "each item's record and charge message; the request's body was "
        f"{b.batch_bytes / 1024:.0f} KB).",
        BATCH_END,
        "",
    ]
    return "\n".join(lines)


def stripe_limit_section(results: Results) -> str:
    """The drain at Stripe's limit, between its markers ("" when it did not run)."""
    r = results.stripe_limit
    if r is None:
        return ""
    d = r.drain
    met = r.ratio >= 0.95 and r.rate_limited <= 0.01 * r.calls and d.succeeded == d.count
    lines = [
        LIMIT_BEGIN,
        "### Drain at Stripe's limit",
        "",
        "Two workers (default pool), a live-mode key and Stripe's published defaults (100 "
        "requests/s for the account, 25/s an endpoint), behind the fault proxy enforcing "
        "Stripe's live limits with 429s (`tests/fault_proxy.py`, `stripe_limits`); Stripe stub "
        f"50 ms; {d.count} payments at once, each reading its customer and creating a "
        f"PaymentIntent (one call of each endpoint: binding limit {r.binding:g} charges/s). "
        "Charges/s between the 10th and 90th percent of completions.",
        "",
        _row(["charges/s (steady)", "of the binding limit", "429s", "calls", "succeeded"]),
        _row(["---"] * 5),
        _row(
            [
                f"{d.steady_rate:.1f}",
                f"{r.ratio:.2f}x",
                str(r.rate_limited),
                str(r.calls),
                f"{d.succeeded}/{d.count}",
            ]
        ),
        "",
        f"drain at Stripe's limit: {d.steady_rate:.1f} charges/s = {r.ratio:.2f}x of the "
        f"binding limit, {r.rate_limited} 429s; goal >= 0.95x, 429s <= 1% of calls, all "
        f"succeeded: {_met(met)}",
        LIMIT_END,
        "",
    ]
    return "\n".join(lines)


def with_section(
    document: str, section: str, begin_marker: str = BATCH_BEGIN, end_marker: str = BATCH_END
) -> str:
    """``document`` with a part's section (the batch part's by default) replaced by
    ``section`` (put before the plot, or at the end, when it has none yet)."""
    before, begin, rest = document.partition(begin_marker)
    if begin:
        _, end, after = rest.partition(end_marker)
        if end:
            return before + section.rstrip("\n") + after
    plot = "![accept and group commit"
    if plot in document:
        head, _, tail = document.partition(plot)
        return head + section + "\n" + plot + tail
    return document.rstrip("\n") + "\n\n" + section


def table(results: Results, plan: Plan) -> str:
    lines: list[str] = []
    lines += _accept_lines(results, plan)
    lines += [batch_section(results)] if results.batch is not None else []
    lines += _sweep_lines(results)
    lines += _list_lines(results, plan)
    lines += _drain_lines(results, plan)
    lines += [cost_section(results)] if results.capped is not None else []
    lines += _fairness_lines(results)
    lines += [stripe_limit_section(results)] if results.stripe_limit is not None else []
    return "\n".join(lines)


def render(
    results: Results, plan: Plan, machine: dict[str, str], *, command: str, elapsed: float
) -> str:
    settings = [f"- {k}: {v}" for k, v in results.settings.items()]
    before = bench_profile.load_before()
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
            "(`bench/stripe_stub.py`, aiohttp), and every HTTP server under test (the real API, "
            "the bare yardstick `bench/bare_app.py`, the script micro-benchmark "
            "`bench/script_app.py`) served by uvicorn with the API's very flags "
            "(`devtools.processes.api_argv`) and the API's logging set-up "
            "(`shared.log_config.configure_logging`: JSON lines, uvicorn's access log off) and "
            "process set-up (start-up objects frozen out of garbage collection once started, "
            "`shared.process`), so that the yardstick pays for no logging and no collection "
            "pass the API does not. Workers are "
            "started by `celery -A worker.celery_app worker`. The machine may be shared with other "
            "engineers running tests: what is compared is measured side by side, "
            "alternated, in the same run, and the ratios are what to read.",
            "",
            "Settings per part:",
            "",
            *settings,
            "- drains: STRIPE_MAX_RPS=0 (cap off) unless the row says the default cap; "
            "WORKER_CONCURRENCY default (128 threads) unless the row says 16",
            "",
            "## Results",
            "",
            table(results, plan),
            "![accept and group commit versus offered load, accept under list load, drain]"
            "(performance.png)",
            "",
            "## Profile of the accept path, before and after",
            "",
            "py-spy (`--rate 200 --nonblocking`, raw stacks summarized by `bench/profile.py`) on "
            "the API process while wrk sends `POST /payments` on 32 connections. Own time: the "
            "frame running when sampled. Inclusive: samples with the function anywhere on the "
            "stack, for the service's code and redis-py only (an awaited coroutine resumed by "
            "the event loop shows a short stack, so inclusive shares are lower bounds).",
            "",
            "Before (commit d30f741, before this work; `bench/profiles/before-d30f741.md`):",
            "",
            *before,
            "",
            "After (this run):",
            "",
            *results.profile,
            "",
            "What took the accept from 0.39x to this run's ratio (each step measured with the "
            "server CPU per request, alternated with the yardstick):",
            "",
            "- `POST /payments` is answered ahead of FastAPI's router (`api/accept_asgi.py`, "
            "inside the authentication middleware): the same accept function and the same error "
            "rendering as the route, which stays declared for OpenAPI; "
            "`tests/api/test_accept_fast_path.py` compares every answer (status, body, headers) "
            "with the router's. FastAPI's exception middleware, route matching, dependency "
            "solving and endpoint wrapper cost about a third of the accept's CPU.",
            "- The group commit writes its batch of `EVALSHA` commands itself (RESP, one write "
            "on one of redis-py's pooled connections, replies read in order) instead of through "
            "a redis-py pipeline object that packs argument by argument; connections, "
            "authentication, TLS, Sentinel and the retry stay redis-py's.",
            "- The answer's JSON is written directly (`api.schemas.payment_json`, tested byte "
            "for byte against the pydantic model), a new record is not decoded again, and the "
            "answer counter's labelled children are cached.",
            "",
            "Both servers run the same FastAPI application machinery outside the route (its "
            "error middleware and native telemetry check), which neither can skip.",
            "",
            "At 64 connections wrk keeps 64 requests in flight against one process: the mean "
            "latency is 64 / the process's requests per second (Little's law), so p99 <= 50 ms "
            "asks one API process for well over 1,280 accepts/s with a tight tail, and how much "
            "over depends on the machine: the p99 there moves with the CPU the process gets "
            "(each round's p99 is given above). The yardstick, at a higher "
            "throughput, has a worse tail there (its p99 in the table). Past one process's "
            "throughput the answer is more API processes (compose `--scale api`, the ECS "
            "service's desired count), which share nothing but Redis.",
            "",
            "Reads: the API's Stripe list call goes through `stripe.AIOHTTPClient` (aiohttp) "
            "instead of httpx's asyncio client, and the page's JSON is written directly "
            "(`api.schemas.customer_payments_json`, tested against the model): a list call's "
            "CPU on the event loop went from about 7.6 ms to 4.6 ms, so the same bound on "
            "concurrent lists takes less from the accepts.",
            "",
            "Drain: one worker is CPU-bound on its process's one core (Python's GIL), so what "
            "a charge costs in CPU is what sets its rate. Measured on this machine with one "
            "worker, 1,500 payments, the stub at 200 ms and log level INFO (a standalone run of "
            "`bench.drain.measure`, process CPU from /proc), in four steps:",
            "",
            "- A shared httpx pool: 64 charges/s (an earlier session's machine, log level "
            "WARNING; 111 there with the next step). Shared by 128 threads, it queued them on "
            "its lock and reopened most connections (default limits) or scanned all 128 "
            "connections on every call (sized up).",
            "- One httpx client and kept-alive connection per thread: 110-125 charges/s, about "
            "8.4 ms of CPU per charge, of which 1.6 ms in Celery's consumer thread (kombu's "
            "delivery, the unacked bookkeeping and the acknowledgement). Sequentially against "
            "the stub, one Stripe call through the SDK cost about 1,150 us of CPU with httpx, "
            "1,500 with requests, 700-780 with urllib3 and 420-450 with pycurl; about 150 of "
            "those are the SDK's own.",
            "- libcurl (`shared.stripe.http_client.ThreadLocalCurlClient`: pycurl, one handle and "
            "kept-alive connection per thread): 187-188 charges/s, 5.2-5.4 ms of CPU per "
            "charge. The sequential figures predicted about 1.4 ms less a charge; under 128 "
            "threads it was about 3 ms less.",
            "- Then the Stripe call timings counted in the process and written to Redis once a "
            "second instead of one round trip per charge: 200-211 charges/s, 4.6-5.0 ms of CPU "
            "per charge.",
            "",
            "The client never sends a write twice by itself: libcurl resends a request whose "
            "kept-alive connection closed before any answer, and the body is given through a "
            "read function that cannot rewind so that this fails instead; the worker then "
            "looks for the charge before it writes again "
            "(`tests/shared/test_stripe_http_client.py`, fault scenarios 2 and 7).",
            "",
            "## How it is measured",
            "",
            "- Accept: `wrk -t1 -c32` and `-c64` with `bench/wrk.lua`, which gives every request "
            "its own `Idempotency-Key` (so each one writes a record and enqueues); no worker "
            "runs, so the queue only grows. The yardstick's and the API's log lines during the "
            "accept rounds are counted (above): equal logging, no access lines.",
            "- Drain: the workers are started and ready first; then the payments are accepted "
            "through `PaymentService.accept` (the API's own accept script) and every final "
            "status published on `payments:events` is timestamped. The rate is taken between "
            "the 10th and the 90th percent of completions. Each charge asks Stripe for the "
            "customer's default payment method, then creates and confirms the PaymentIntent: "
            "two calls.",
            "- List: `wrk -c1` on the stub's `GET /v1/charges` (the gateway's very request) and "
            "on the API's `GET /cus_bench1/payments?limit=20`; the overhead is the difference of "
            "the medians. Then the accept load runs alone and next to the list connections.",
            "- Redis cost: see its section; `bench/redis_cost.py`.",
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
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax1, ax2, ax3, ax4 = axes[0][0], axes[0][1], axes[1][0], axes[1][1]
    styles = {
        "bare": "o--",
        "script": "v:",
        "script_gc": "^:",
        "real_nogc": "s--",
        "real": "s-",
    }
    for name, style in styles.items():
        runs = results.sweep.get(name, {})
        conns = sorted(runs)
        ax1.plot(conns, [runs[c].rps for c in conns], style, label=LABELS[name])
        ax2.plot(conns, [runs[c].p99_ms for c in conns], style, label=LABELS[name])
    ax1.set(xlabel="concurrent connections (offered load)", ylabel="requests/s", title="Accept")
    ax2.set(xlabel="concurrent connections (offered load)", ylabel="p99 ms", title="Accept p99")
    ax2.axhline(ACCEPT_P99_GOAL_MS, color="grey", linestyle=":", label="goal p99")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    names = list(results.under_list)
    if names:
        xs = range(len(names))
        alone = [_median([r[0].rps for r in results.under_list[n]]) for n in names]
        loaded = [_median([r[1].rps for r in results.under_list[n]]) for n in names]
        ax3.bar([x - 0.2 for x in xs], alone, width=0.4, label="accept alone")
        ax3.bar(
            [x + 0.2 for x in xs],
            loaded,
            width=0.4,
            label=f"accept + {plan.list_load_connections} list connections",
        )
        ax3.set_xticks(
            list(xs),
            ["default list bound" if n == "real" else "no list bound" for n in names],
        )
    ax3.set(ylabel="accept requests/s", title="Accept under list load")
    ax3.grid(alpha=0.3, axis="y")
    ax3.legend(fontsize=8)
    for latency in sorted({d.latency_ms for d in results.drains}):
        points = sorted(
            (d.workers, d.steady_rate) for d in results.drains if d.latency_ms == latency
        )
        ax4.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            "o-",
            label=f"Stripe {latency:g} ms/call, cap off",
        )
    if results.scaling:
        points = sorted((d.workers, d.steady_rate) for d in results.scaling)
        ax4.plot([p[0] for p in points], [p[1] for p in points], "s--", label="16 threads, 200 ms")
    if results.capped is not None:
        ax4.plot(
            [results.capped.workers],
            [results.capped.steady_rate],
            "D",
            label=f"default cap {results.capped_rps:g} calls/s",
        )
    if results.drains:
        ax4.axhline(DRAIN_GOAL, color="grey", linestyle=":", label="goal, 1 worker at 200 ms")
        ax4.set_xticks(sorted({d.workers for d in results.drains}))
    ax4.set(xlabel="worker processes", ylabel="charges/s", title="Drain")
    ax4.grid(alpha=0.3)
    ax4.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
