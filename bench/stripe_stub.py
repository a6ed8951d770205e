"""A constant-latency Stripe stub (a "dummy connector") for the benchmarks, never for production.

Answers the calls the service makes with Stripe-shaped JSON after a fixed delay, so that what is
measured is the service and not an emulator: ``GET /v1/customers/{id}`` (with
``invoice_settings.default_payment_method``), ``POST /v1/payment_intents`` (succeeded, ``pi_``,
``latest_charge`` ``ch_``), ``GET /v1/payment_intents/{id}``, ``GET /v1/payment_intents`` (no
earlier attempt: an empty page) and ``GET /v1/charges`` (a page of charges with their
PaymentIntent expanded). asyncio (aiohttp, uvloop when present): thousands of
delayed requests wait at once without a thread each.

Control (for the benchmark driver): ``POST /_bench/latency?ms=200`` sets the delay,
``GET /_bench/stats`` counts the answers, ``POST /_bench/reset`` zeroes the counts.

    python -m bench.stripe_stub --port 8421 --latency-ms 200
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from typing import Any

from aiohttp import web

STATS: web.AppKey[dict[str, int]] = web.AppKey("stats", dict)
LATENCY: web.AppKey[list[float]] = web.AppKey("latency", list)

_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}_bench{next(_ids):012d}"


def _json(body: dict[str, Any]) -> web.Response:
    return web.json_response(body, headers={"Request-Id": _new_id("req")})


async def _delay(request: web.Request, name: str) -> None:
    counts = request.app[STATS]
    counts[name] = counts.get(name, 0) + 1
    latency = request.app[LATENCY][0]
    if latency > 0:
        await asyncio.sleep(latency)


async def retrieve_customer(request: web.Request) -> web.Response:
    await _delay(request, "customers.retrieve")
    customer = request.match_info["id"]
    return _json(
        {
            "id": customer,
            "object": "customer",
            "created": int(time.time()),
            "default_source": None,
            "email": "bench@example.com",
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": "pm_bench_visa",
                "footer": None,
            },
            "livemode": False,
            "metadata": {},
        }
    )


def _intent(intent_id: str, form: Any) -> dict[str, Any]:
    return {
        "id": intent_id,
        "object": "payment_intent",
        "amount": int(form.get("amount", 4299)),
        "currency": form.get("currency", "usd"),
        "customer": form.get("customer"),
        "payment_method": form.get("payment_method"),
        "status": "succeeded",
        "latest_charge": _new_id("ch"),
        "next_action": None,
        "metadata": {"payment_id": form.get("metadata[payment_id]")},
        "created": int(time.time()),
        "livemode": False,
    }


async def create_payment_intent(request: web.Request) -> web.Response:
    form = await request.post()
    await _delay(request, "payment_intents.create")
    return _json(_intent(_new_id("pi"), form))


async def retrieve_payment_intent(request: web.Request) -> web.Response:
    await _delay(request, "payment_intents.retrieve")
    return _json(_intent(request.match_info["id"], {}))


async def list_payment_intents(request: web.Request) -> web.Response:
    await _delay(request, "payment_intents.list")
    return _json({"object": "list", "url": "/v1/payment_intents", "has_more": False, "data": []})


async def list_charges(request: web.Request) -> web.Response:
    await _delay(request, "charges.list")
    limit = min(int(request.query.get("limit", "10")), 100)
    customer = request.query.get("customer", "cus_bench")
    now = int(time.time())
    data = []
    for i in range(limit):
        payment_id = f"pay_{i:024x}"
        data.append(
            {
                "id": f"ch_bench{i:012d}",
                "object": "charge",
                "amount": 4299,
                "amount_refunded": 0,
                "currency": "usd",
                "customer": customer,
                "status": "succeeded",
                "paid": True,
                "created": now - i,
                "description": None,
                "failure_code": None,
                "refunded": False,
                "metadata": {"payment_id": payment_id},
                "payment_intent": {
                    "id": f"pi_bench{i:012d}",
                    "object": "payment_intent",
                    "status": "succeeded",
                    "metadata": {"payment_id": payment_id},
                },
            }
        )
    return _json({"object": "list", "url": "/v1/charges", "has_more": True, "data": data})


async def set_latency(request: web.Request) -> web.Response:
    request.app[LATENCY][0] = float(request.query["ms"]) / 1000
    return web.json_response({"latency_ms": request.app[LATENCY][0] * 1000})


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS].copy())


async def reset(request: web.Request) -> web.Response:
    request.app[STATS].clear()
    return web.json_response({})


def make_app(latency_ms: float = 0.0) -> web.Application:
    app = web.Application()
    app[STATS] = {}
    app[LATENCY] = [latency_ms / 1000]
    app.router.add_get("/v1/customers/{id}", retrieve_customer)
    app.router.add_post("/v1/payment_intents", create_payment_intent)
    app.router.add_get("/v1/payment_intents/{id}", retrieve_payment_intent)
    app.router.add_get("/v1/payment_intents", list_payment_intents)
    app.router.add_get("/v1/charges", list_charges)
    app.router.add_post("/_bench/latency", set_latency)
    app.router.add_get("/_bench/stats", stats)
    app.router.add_post("/_bench/reset", reset)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8421)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        loop = asyncio.new_event_loop()
    web.run_app(
        make_app(args.latency_ms),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
        loop=loop,
    )


if __name__ == "__main__":
    main()
