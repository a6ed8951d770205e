"""Limits on every route, against real processes (Redis, the Stripe emulator behind the fault
proxy, a worker, uvicorn): a client limited to 2 requests/s that sends 12 refunds at once, or
12 invalid payments at once, has the excess refused with 429 and Retry-After, and no more pass
than its bucket allows (burst + rate x elapsed); a client saturating its share of the list
calls leaves a slot to another client (figures in docs/RELIABILITY.md)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

TIGHT, BUSY, CALM = "tight-client-key", "busy-client-key", "calm-client-key"
RATE, BURST = 2, 2


def digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


CLIENTS = [
    {"name": "tight", "keys": [digest(TIGHT)], "max_rps": RATE, "burst": BURST},
    {"name": "busy", "keys": [digest(BUSY)], "scopes": ["payments", "customers:all"]},
    {"name": "calm", "keys": [digest(CALM)], "scopes": ["payments", "customers:all"]},
]
Send = Callable[[httpx.Client], httpx.Response]


def at_once(api: str, key: str, sends: list[Send]) -> tuple[list[httpx.Response], float]:
    """Every request on its own connection, released together; the answers and the seconds
    from the release to the last answer."""
    clients = [
        httpx.Client(base_url=api, timeout=30, headers={"Authorization": f"Bearer {key}"})
        for _ in sends
    ]
    gate = threading.Barrier(len(sends) + 1)

    def run(pair: tuple[httpx.Client, Send]) -> httpx.Response:
        client, send = pair
        gate.wait()
        return send(client)

    try:
        with ThreadPoolExecutor(len(sends)) as pool:
            futures = [pool.submit(run, pair) for pair in zip(clients, sends, strict=True)]
            gate.wait()
            started = time.perf_counter()
            answers = [f.result() for f in futures]
            elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            client.close()
    return answers, elapsed


def check_held_to_its_bucket(answers: list[httpx.Response], elapsed: float) -> int:
    """The 429s say when to come back; the others are at most what the bucket holds plus what
    it refilled meanwhile. Returns how many passed."""
    limited = [a for a in answers if a.status_code == 429]
    assert limited, "nothing was refused"
    for answer in limited:
        assert answer.json()["error"]["code"] == "rate_limited"
        assert int(answer.headers["retry-after"]) >= 1
        assert answer.headers["ratelimit-policy"] == f'"client";q={BURST};w=1'
        assert answer.headers["ratelimit"].startswith('"client";r=0;t=')
    passed = len(answers) - len(limited)
    assert 1 <= passed <= BURST + RATE * elapsed
    return passed


def test_every_route_takes_its_token_and_lists_are_shared(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = {
        "API_CLIENTS": json.dumps(CLIENTS),
        "LIST_MAX_CONCURRENCY": "4",  # a client's share (LIST_CLIENT_SHARE 0.5): 2
        "LOG_LEVEL": "INFO",
    }
    with Stack.running(tmp_path_factory, "limits", env, workers=1) as stack:
        with stack.stripe_admin() as stripe:
            customer = stripe.customer()
        tight = {"Authorization": f"Bearer {TIGHT}"}
        with httpx.Client(base_url=stack.api_url, timeout=40, headers=tight) as api:
            paid = api.post(
                "/payments", json={"account_id": customer, "amount": "1.00"}, params={"wait": 30}
            )
        assert paid.status_code == 200, paid.text
        refunds = f"/payments/{paid.json()['id']}/refunds"

        time.sleep(BURST / RATE + 0.5)  # the bucket is full again

        def refund(n: int) -> Send:
            return lambda c: c.post(
                refunds, json={"amount": "0.01"}, headers={"Idempotency-Key": f"refund-{n}"}
            )

        refund_answers, refund_elapsed = at_once(
            stack.api_url, TIGHT, [refund(n) for n in range(12)]
        )
        refunded = check_held_to_its_bucket(refund_answers, refund_elapsed)
        assert {a.status_code for a in refund_answers} <= {202, 200, 429}

        time.sleep(BURST / RATE + 0.5)
        invalid: list[Send] = [
            lambda c: c.post(
                "/payments", content=b"{", headers={"content-type": "application/json"}
            ),
            lambda c: c.post("/payments", json={"account_id": customer, "amount": "-1"}),
            lambda c: c.post(
                "/payments",
                json={"account_id": customer, "amount": "1.00"},
                headers={"Idempotency-Key": "k" * 256},
            ),
        ] * 4
        invalid_answers, invalid_elapsed = at_once(stack.api_url, TIGHT, invalid)
        refused_invalid = check_held_to_its_bucket(invalid_answers, invalid_elapsed)
        assert {a.status_code for a in invalid_answers} == {400, 429}

        # Each list waits 2 s on "Stripe": the busy client asks for twice its share at once.
        stack.proxy(latency_ms=2000)
        lists: list[Send] = [lambda c: c.get(f"/{customer}/payments")] * 4
        busy_answers: list[httpx.Response] = []
        busy_started = time.perf_counter()
        busy = threading.Thread(
            target=lambda: busy_answers.extend(at_once(stack.api_url, BUSY, lists)[0])
        )
        busy.start()
        time.sleep(0.5)  # the busy client's lists are in flight or refused by now
        calm_key = {"Authorization": f"Bearer {CALM}"}
        with httpx.Client(base_url=stack.api_url, timeout=30, headers=calm_key) as api:
            calm_sent = time.perf_counter() - busy_started
            calm = api.get(f"/{customer}/payments")
        busy.join()
        busy_done = time.perf_counter() - busy_started
        stack.proxy_reset()

    assert calm.status_code == 200, calm.text
    statuses = sorted(a.status_code for a in busy_answers)
    assert statuses == [200, 200, 503, 503]
    for refused in (a for a in busy_answers if a.status_code == 503):
        assert refused.json()["error"]["code"] == "list_busy"
        assert refused.headers["retry-after"] == "1"
    assert calm_sent < 2.0 < busy_done  # asked while the busy client held its two slots
    print(
        f"\n[limits] 12 refunds at once from a client of {RATE}/s (burst {BURST}): "
        f"{refunded} passed, {12 - refunded} answered 429 in {refund_elapsed:.2f} s "
        f"(bound {BURST + RATE * refund_elapsed:.1f}); 12 invalid payments at once: "
        f"{refused_invalid} answered 400, {12 - refused_invalid} answered 429 in "
        f"{invalid_elapsed:.2f} s; lists (LIST_MAX_CONCURRENCY 4, 2 s each): busy client "
        f"{statuses}, calm client asked at {calm_sent:.2f} s while busy held its slots: "
        f"{calm.status_code}"
    )
