"""A Stripe-like HTTP proxy for fault tests: it sits between the workers and the emulator.

It behaves as Stripe documents where the emulator does not:
- a POST with an ``Idempotency-Key`` seen before with the same parameters replays the saved
  answer (``Idempotent-Replayed: true``); with other parameters it answers 400
  ``idempotency_error``; while the first request is still running, 409;
and, on demand (``POST /_proxy/config``), it injects faults:
- ``fail``: answer the next N Stripe requests (to ``path`` and of ``method`` if given: Stripe
  counts ``POST /v1/payment_intents`` and ``GET /v1/payment_intents`` as two endpoints) with a
  status (429/500/502/503) before the idempotency layer, with ``Stripe-Should-Retry`` and
  ``Retry-After``;
- ``latency_ms``: delay every request;
- ``drop``: forward the next N POSTs, save Stripe's answer, then cut the connection so the
  caller never sees it (``drop_forgets``: and forget every saved key at that moment;
  ``then_fail``: and from then on inject these ``fail`` entries);
- ``forget``: drop every saved idempotency key (Stripe forgets them after 24 hours);
- ``stripe_limits``: enforce Stripe's published rate limits (docs.stripe.com/rate-limits) as
  Stripe meters them, per account: a global limit and one per endpoint (the method and the path
  template, ``GET /v1/customers/{id}`` one endpoint whatever the id), each a token bucket of
  that many requests a second holding at most one second of them, as Stripe's request rate
  limiter is built. ``{"stripe_limits": "live"}`` is 100/s global and 25/s an endpoint,
  ``"sandbox"`` 25/s global; a dict (``{"global": 100, "endpoint": 25, "POST /v1/refunds":
  50}``) sets its own, ``null`` turns it off. Past a limit the answer is Stripe's: 429 with the
  ``rate_limit`` error and ``Stripe-Rate-Limited-Reason`` (``global-rate``, ``endpoint-rate``),
  at once, before the ``latency_ms``; a refused request takes no token. A ``fail`` entry's
  ``code`` (``lock_timeout``) is sent as the error's code.
``GET /_proxy/log`` lists what came through; ``POST /_proxy/reset`` clears faults and the log.

Run: ``python -m tests.fault_proxy --upstream http://127.0.0.1:8420 --port 8421``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
              "content-encoding"}  # fmt: skip


@dataclass
class Saved:
    fingerprint: str
    status: int
    body: bytes
    content_type: str


@dataclass
class State:
    upstream: str
    fail: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: int = 0
    drop: int = 0
    drop_forgets: bool = False
    then_fail: list[dict[str, Any]] = field(default_factory=list)
    saved: dict[str, Saved] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)
    log: list[dict[str, Any]] = field(default_factory=list)
    limits: StripeLimits | None = None


# Stripe's published defaults (docs.stripe.com/rate-limits): requests a second, per account.
PUBLISHED_LIMITS = {
    "live": {"global": 100.0, "endpoint": 25.0},
    "sandbox": {"global": 25.0, "endpoint": 25.0},
}


def endpoint_of(method: str, path: str) -> str:
    """The endpoint as Stripe's limits count it: ``/v1/<resource>/<id>/...`` with the id as
    ``{id}``."""
    parts = path.split("/")
    if len(parts) > 3 and parts[1] == "v1":
        parts[3] = "{id}"
    return f"{method} {'/'.join(parts)}"


@dataclass
class Bucket:
    rate: float
    tokens: float
    at: float

    def refill(self, now: float) -> None:
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now


@dataclass
class StripeLimits:
    global_rate: float
    endpoint_rate: float
    overrides: dict[str, float]
    buckets: dict[str, Bucket] = field(default_factory=dict)

    @classmethod
    def parse(cls, config: str | dict[str, Any]) -> StripeLimits:
        values = dict(PUBLISHED_LIMITS[config]) if isinstance(config, str) else dict(config)
        return cls(
            global_rate=float(values.pop("global", PUBLISHED_LIMITS["live"]["global"])),
            endpoint_rate=float(values.pop("endpoint", PUBLISHED_LIMITS["live"]["endpoint"])),
            overrides={name: float(rate) for name, rate in values.items()},
        )

    def _bucket(self, name: str, rate: float, now: float) -> Bucket:
        bucket = self.buckets.get(name)
        if bucket is None:
            bucket = self.buckets[name] = Bucket(rate, rate, now)
        bucket.refill(now)
        return bucket

    def refusal(self, endpoint: str) -> str | None:
        """Why the request is refused (Stripe-Rate-Limited-Reason), or None: it takes a token
        of the account's bucket and of its endpoint's."""
        now = time.monotonic()
        account = self._bucket("global", self.global_rate, now)
        own = self._bucket(endpoint, self.overrides.get(endpoint, self.endpoint_rate), now)
        if account.tokens < 1:
            return "global-rate"
        if own.tokens < 1:
            return "endpoint-rate"
        account.tokens -= 1
        own.tokens -= 1
        return None


def rate_limited(reason: str) -> web.Response:
    """Stripe's answer past a rate limit."""
    return web.json_response(
        {"error": {"type": "invalid_request_error", "code": "rate_limit",
                   "message": "Request rate limit exceeded. Learn more about rate limits here "
                              "https://stripe.com/docs/rate-limits.",
                   "doc_url": "https://stripe.com/docs/error-codes/rate-limit"}},
        status=429,
        headers={"Stripe-Rate-Limited-Reason": reason,
                 "Request-Id": f"req_{secrets.token_hex(7)}"},
    )  # fmt: skip


STATE = web.AppKey("state", State)
SESSION = web.AppKey("session", ClientSession)


async def configure(request: web.Request) -> web.Response:
    state = request.app[STATE]
    config = await request.json()
    if "fail" in config:
        state.fail = [dict(f) for f in config["fail"] for _ in range(int(f.get("count", 1)))]
    if "latency_ms" in config:
        state.latency_ms = int(config["latency_ms"])
    if "drop" in config:
        state.drop = int(config["drop"])
        state.drop_forgets = bool(config.get("drop_forgets", False))
        state.then_fail = [dict(f) for f in config.get("then_fail", ())]
    if config.get("forget"):
        state.saved.clear()
    if "stripe_limits" in config:
        limits = config["stripe_limits"]
        state.limits = StripeLimits.parse(limits) if limits is not None else None
    return web.json_response({"ok": True})


async def reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.fail.clear()
    state.latency_ms = 0
    state.drop = 0
    state.drop_forgets = False
    state.then_fail = []
    state.limits = None
    state.log.clear()
    if (await request.json() if request.can_read_body else {}).get("forget"):
        state.saved.clear()
    return web.json_response({"ok": True})


async def show_log(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].log)


async def proxy(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await request.read()
    key = request.headers.get("Idempotency-Key")
    entry: dict[str, Any] = {
        "time": time.time(),
        "method": request.method,
        "path": request.path,
        "idempotency_key": key,
    }
    state.log.append(entry)
    if state.limits is not None:
        endpoint = endpoint_of(request.method, request.path)
        reason = state.limits.refusal(endpoint)
        if reason is not None:
            entry["outcome"] = f"rate_limited {reason}"
            return rate_limited(reason)
    if state.latency_ms:
        await asyncio.sleep(state.latency_ms / 1000)

    fault = next(
        (
            f
            for f in state.fail
            if f.get("path") in (None, request.path) and f.get("method") in (None, request.method)
        ),
        None,
    )
    if fault is not None:
        state.fail.remove(fault)
        entry["outcome"] = f"injected {fault['status']}"
        headers = {}
        if "should_retry" in fault:
            headers["Stripe-Should-Retry"] = "true" if fault["should_retry"] else "false"
        if "retry_after" in fault:
            headers["Retry-After"] = str(fault["retry_after"])
        kind = "rate_limit_error" if fault["status"] == 429 else "api_error"
        error = {"type": kind, "message": "Injected by the fault proxy."}
        if "code" in fault:
            error["code"] = fault["code"]
        return web.json_response(
            {"error": error},
            status=int(fault["status"]),
            headers=headers,
        )

    fingerprint = hashlib.sha256(request.path.encode() + b"?" + body).hexdigest()
    if request.method == "POST" and key:
        saved = state.saved.get(key)
        if saved is not None:
            if saved.fingerprint != fingerprint:
                entry["outcome"] = "idempotency_error"
                return web.json_response(
                    {"error": {"type": "idempotency_error",
                               "message": "Keys for idempotent requests can only be used with "
                                          "the same parameters they were first used with."}},
                    status=400,
                )  # fmt: skip
            entry["outcome"] = "replayed"
            return web.Response(
                status=saved.status,
                body=saved.body,
                content_type=saved.content_type,
                headers={"Idempotent-Replayed": "true"},
            )
        if key in state.in_flight:
            entry["outcome"] = "in_flight_409"
            return web.json_response(
                {"error": {"type": "idempotency_error", "code": "idempotency_key_in_use",
                           "message": "There is currently another in-progress request using "
                                      "this Stripe token."}},
                status=409,
            )  # fmt: skip
        state.in_flight.add(key)
    try:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with request.app[SESSION].request(
            request.method,
            state.upstream + request.path_qs,
            data=body,
            headers=headers,
        ) as upstream:
            answer = await upstream.read()
            status = upstream.status
            content_type = upstream.content_type
        if request.method == "POST" and key and status < 500:
            state.saved[key] = Saved(fingerprint, status, answer, content_type)
    finally:
        if key:
            state.in_flight.discard(key)

    if request.method == "POST" and state.drop > 0:
        state.drop -= 1
        entry["outcome"] = "forwarded_then_dropped"
        if state.drop_forgets:
            state.saved.clear()  # as if Stripe's 24 hours passed before the retry
        if state.then_fail:  # faults that start the moment the answer is lost
            state.fail = [f for f in state.then_fail for _ in range(int(f.get("count", 1)))]
            state.then_fail = []
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # nothing reaches the caller
    entry["outcome"] = f"forwarded {status}"
    return web.Response(status=status, body=answer, content_type=content_type)


def build_app(upstream: str) -> web.Application:
    app = web.Application(client_max_size=1024**2)
    app[STATE] = State(upstream=upstream.rstrip("/"))

    async def session_ctx(app: web.Application) -> Any:
        app[SESSION] = ClientSession()
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/_proxy/config", configure)
    app.router.add_post("/_proxy/reset", reset)
    app.router.add_get("/_proxy/log", show_log)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(build_app(args.upstream), host="127.0.0.1", port=args.port, print=None,
                access_log=None)  # fmt: skip


if __name__ == "__main__":
    main()
