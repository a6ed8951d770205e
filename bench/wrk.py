"""Running wrk (the load generator) with bench/wrk.lua and reading its one-line JSON summary."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "wrk.lua"
LIST_SCRIPT = Path(__file__).resolve().parent / "wrk_list.lua"
BATCH_SCRIPT = Path(__file__).resolve().parent / "wrk_batch.lua"

INSTALL_HINT = (
    "wrk (the HTTP load generator) is not on PATH. Install it, then run `make bench` again:\n"
    "  Debian/Ubuntu: apt-get update && apt-get install -y wrk   (as root, or with sudo)\n"
    "  macOS:         brew install wrk"
)

# The body of every benchmark POST /payments: valid, no payment_method (so a charge makes two
# Stripe calls: the customer's default payment method, then the PaymentIntent).
PAYMENT_BODY = '{"account_id":"cus_bench1","amount":"42.99"}'

# The client key the benchmark gives the API (API_CLIENTS, API_KEYS) and sends as a bearer token:
# authentication middleware runs as in production. The bare yardstick ignores the header.
CLIENT_KEY = "bench_client_key_0123456789abcdef"


class WrkMissing(RuntimeError):
    pass


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkMissing(INSTALL_HINT)
    return found


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: int  # socket errors and non-2xx/3xx answers
    ok: int | None = None  # wrk_list.lua only: 2xx answers
    busy: int | None = None  # wrk_list.lua only: 503 answers (the client then waited)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_argv(
    url: str,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    post: bool = True,
    body: str = PAYMENT_BODY,
) -> list[str]:
    """wrk's command line; POSTs carry a unique Idempotency-Key (run id, thread, counter)."""
    args = ["post", "b" + uuid.uuid4().hex[:12], body, CLIENT_KEY] if post else ["get", CLIENT_KEY]
    return [
        wrk_binary(),
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        url,
        "--",
        *args,
    ]


def batch_argv(url: str, *, connections: int, seconds: float, size: int) -> list[str]:
    """POST /payments/batch with ``size`` payments a request, each its own idempotency_key
    (bench/wrk_batch.lua)."""
    return [
        wrk_binary(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(BATCH_SCRIPT),
        url,
        "--",
        "b" + uuid.uuid4().hex[:12],
        str(size),
        CLIENT_KEY,
    ]


def polite_list_argv(url: str, *, connections: int, seconds: float) -> list[str]:
    """GETs that honour Retry-After after a 503 (bench/wrk_list.lua)."""
    return [
        wrk_binary(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LIST_SCRIPT),
        url,
        "--",
        CLIENT_KEY,
    ]


def parse(output: str) -> WrkResult:
    for line in output.splitlines():
        if line.startswith("BENCH_JSON "):
            d = json.loads(line.split(" ", 1)[1])
            errors = sum(
                int(d[k])
                for k in ("connect_errors", "read_errors", "write_errors", "status_errors")
            ) + int(d["timeouts"])
            return WrkResult(
                requests=int(d["requests"]),
                seconds=int(d["duration_us"]) / 1e6,
                p50_ms=d["p50_us"] / 1000,
                p90_ms=d["p90_us"] / 1000,
                p99_ms=d["p99_us"] / 1000,
                max_ms=d["max_us"] / 1000,
                mean_ms=float(d["mean_us"]) / 1000,
                errors=errors,
                ok=int(d["ok"]) if "ok" in d else None,
                busy=int(d["busy"]) if "busy" in d else None,
            )
    raise RuntimeError(f"wrk printed no summary:\n{output[-2000:]}")


def start(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 (our own argv: wrk and our script)
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen[str]) -> WrkResult:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}:\n{out[-2000:]}")
    return parse(out)


def run(
    url: str, *, connections: int, seconds: float, threads: int = 1, post: bool = True
) -> WrkResult:
    argv = wrk_argv(url, connections=connections, seconds=seconds, threads=threads, post=post)
    return finish(start(argv))


def version() -> str:
    try:
        out = subprocess.run(  # noqa: S603
            [wrk_binary(), "-v"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (WrkMissing, OSError, subprocess.TimeoutExpired):
        return "wrk not found"
    return out.splitlines()[0].strip() if out else "wrk"
