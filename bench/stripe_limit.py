"""Drain at Stripe's limit: two workers with a live-mode key and Stripe's published defaults,
behind the fault proxy enforcing Stripe's live limits (100 requests/s for the account, 25/s an
endpoint, 429 past them), the stub answering in 50 ms. Each charge reads its customer and
creates a PaymentIntent, one call of each endpoint: the binding limit is 25 charges/s. Reports
the drain between its 10th and 90th percent of completions, as a share of that limit, and the
429s Stripe (the proxy) answered."""

from __future__ import annotations

import json
import urllib.request
import uuid
from dataclasses import dataclass

from bench import drain
from devtools.processes import (
    ProcessGroup,
    celery_worker_argv,
    free_port,
    python_module,
    wait_for_log,
    wait_for_port,
)
from shared.settings.service_settings import Settings

# Made up: only its live-mode prefix matters (the stub takes any key).
LIVE_KEY = "sk_live_bench_fake"


@dataclass(frozen=True, slots=True)
class StripeLimitResult:
    drain: drain.DrainResult
    binding: float  # charges/s the binding limit allows
    calls: int  # requests that reached the proxy
    rate_limited: int  # answered 429

    @property
    def ratio(self) -> float:
        return self.drain.steady_rate / self.binding


def _post_json(url: str, body: dict[str, object]) -> None:
    request = urllib.request.Request(  # noqa: S310 (loopback)
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310
        pass


def _proxy_log(url: str) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"{url}/_proxy/log", timeout=30) as resp:  # noqa: S310
        entries: list[dict[str, object]] = json.loads(resp.read())
        return entries


def measure(
    group: ProcessGroup,
    redis_url: str,
    env: dict[str, str],
    stub: str,
    *,
    count: int,
    workers: int = 2,
) -> StripeLimitResult:
    """``count`` payments at once through the limiting proxy; the stub's latency as set."""
    import redis

    port = free_port()
    proxy = group.start(
        "stripe-limits-proxy",
        python_module("tests.fault_proxy", "--upstream", stub, "--port", str(port)),
    )
    wait_for_port(port, proc=proxy)
    proxy_url = f"http://127.0.0.1:{port}"
    _post_json(f"{proxy_url}/_proxy/config", {"stripe_limits": "live"})
    service = {k: v for k, v in env.items() if k != "STRIPE_MAX_RPS"}  # Stripe's defaults
    service.update({"STRIPE_API_KEY": LIVE_KEY, "STRIPE_API_BASE": proxy_url})
    binding = Settings(environment="test", stripe_api_key=LIVE_KEY).stripe_limits.charge_rate
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    names = [f"limit-worker-{i}-{uuid.uuid4().hex[:6]}" for i in range(workers)]
    for i, name in enumerate(names):
        group.start(name, celery_worker_argv("-n", f"limits{i}@%h"), env=service)
    try:
        for name in names:
            wait_for_log(group.log_dir / f"{name}.log", "ready.")
        result = drain.measure(
            redis_url,
            workers=workers,
            latency_ms=50.0,
            count=count,
            timeout=count / binding * 2 + 60,
            run_id=f"limits-{uuid.uuid4().hex[:8]}",
        )
        log = _proxy_log(proxy_url)
    finally:
        for name in names:
            group.stop(name, grace=30)
        group.stop("stripe-limits-proxy")
    limited = sum(1 for e in log if str(e.get("outcome", "")).startswith("rate_limited"))
    return StripeLimitResult(result, binding, len(log), limited)
