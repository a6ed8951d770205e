"""Drain: how many charges a number of worker processes complete per second.

The workers are started first and given time to be ready; then ``count`` payments are accepted
through the API's own accept path (``PaymentService.accept``: the one Lua script that writes the
record and pushes the Celery message), and every final status the workers publish on
``payments:events`` is timestamped. The rate is taken over the middle of the run (from the 10th
to the 90th percent of completions), so that neither the ramp-up nor the last stragglers count.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from api.schemas import PaymentRequest
from api.service import PaymentService
from shared.config import Settings
from shared.store.keys import EVENTS_CHANNEL, record_key


@dataclass(frozen=True, slots=True)
class DrainResult:
    workers: int
    latency_ms: float
    count: int
    completed: int
    succeeded: int
    steady_rate: float  # charges/s between 10 % and 90 % of the completions
    overall_rate: float  # charges/s from the first enqueue to the last completion
    seconds: float


async def _enqueue(service: PaymentService, count: int, run_id: str) -> list[str]:
    request = PaymentRequest(account_id="cus_bench1", amount="42.99")
    ids: list[str] = []
    batch = 100
    for start in range(0, count, batch):
        accepted = await asyncio.gather(
            *(
                service.accept(request, idempotency_key=f"{run_id}-{i}", client="bench", headers={})
                for i in range(start, min(count, start + batch))
            )
        )
        ids += [a.record.id for a in accepted]
    return ids


async def _drain(
    redis_url: str, count: int, *, deadline: float, run_id: str
) -> tuple[float, list[float], list[str], Redis]:
    client = Redis.from_url(redis_url, max_connections=256)
    settings = Settings(redis_url=redis_url, environment="test")
    service = PaymentService(client, settings)
    pubsub = client.pubsub()
    await pubsub.subscribe(EVENTS_CHANNEL)
    done: list[float] = []

    async def listen() -> None:
        while len(done) < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                done.append(time.perf_counter())

    listener = asyncio.create_task(listen())
    t0 = time.perf_counter()
    ids = await _enqueue(service, count, run_id)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(listener, deadline)
    await pubsub.unsubscribe()
    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
    return t0, done, ids, client


async def _statuses(client: Redis, ids: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for payment_id in ids:
        pipe.hget(record_key(payment_id), "status")
    statuses = await pipe.execute()
    return sum(1 for s in statuses if s == b"succeeded")


def measure(
    redis_url: str,
    *,
    workers: int,
    latency_ms: float,
    count: int,
    timeout: float,
    run_id: str,
) -> DrainResult:
    async def go() -> DrainResult:
        t0, done, ids, client = await _drain(redis_url, count, deadline=timeout, run_id=run_id)
        try:
            succeeded = await _statuses(client, ids)
        finally:
            await client.aclose()
        n = len(done)
        lo, hi = int(n * 0.1), max(int(n * 0.9) - 1, 0)
        steady = (hi - lo) / (done[hi] - done[lo]) if n > 10 and done[hi] > done[lo] else 0.0
        total = (done[-1] - t0) if done else 0.0
        return DrainResult(
            workers=workers,
            latency_ms=latency_ms,
            count=count,
            completed=n,
            succeeded=succeeded,
            steady_rate=steady,
            overall_rate=n / total if total else 0.0,
            seconds=total,
        )

    return asyncio.run(go())
