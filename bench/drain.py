"""Drain: how many charges a number of worker processes complete per second.

The workers are started first and given time to be ready; then ``count`` payments are accepted
through the API's own accept path (``PaymentService.accept``: the one Lua script that writes the
record and pushes the Celery message), and every final status the workers publish on
``payments:events`` is timestamped. The rate is taken over the middle of the run (from the 10th
to the 90th percent of completions), so that neither the ramp-up nor the last stragglers count.

With ``cost=True`` the run also measures what the payments cost Redis (``bench.redis_cost``):
commands and round trips from the accept to the worker's acknowledgement, and bytes per queued
payment and per kept record.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis as sync_redis
from redis.asyncio import Redis

from api.schemas import PaymentRequest
from api.service import PaymentService
from bench import redis_cost
from shared.settings.api_clients import ANONYMOUS
from shared.settings.service_settings import Settings
from shared.store import charge_queues
from shared.store.keys import EVENTS_CHANNEL, UNACKED, client_queue, record_key

QUEUE_NAME = Settings.model_fields["queue_name"].default


@dataclass(frozen=True, slots=True)
class DrainResult:
    workers: int
    latency_ms: float
    count: int
    completed: int
    succeeded: int
    failed: int  # final status failed (anything else not succeeded is counted as not done)
    steady_rate: float  # charges/s between 10 % and 90 % of the completions
    overall_rate: float  # charges/s from the first enqueue to the last completion
    seconds: float
    cost: redis_cost.RedisCost | None = None


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
    redis_url: str,
    count: int,
    *,
    deadline: float,
    run_id: str,
    after_enqueue: Callable[[], None] | None = None,
) -> tuple[float, list[float], list[str], Redis]:
    client = Redis.from_url(redis_url, max_connections=256)
    # The benchmark stands in for many clients: no per-client rate limit, no backlog bound.
    settings = Settings(
        redis_url=redis_url, environment="test", client_max_rps=0, queue_max_backlog=100_000_000
    )
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
    if after_enqueue is not None:
        after_enqueue()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(listener, deadline)
    await pubsub.unsubscribe()
    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
    return t0, done, ids, client


async def _statuses(client: Redis, ids: list[str]) -> tuple[int, int]:
    pipe = client.pipeline(transaction=False)
    for payment_id in ids:
        pipe.hget(record_key(payment_id), "status")
    statuses = await pipe.execute()
    return sum(1 for s in statuses if s == b"succeeded"), sum(1 for s in statuses if s == b"failed")


def _wait_acked(client: sync_redis.Redis, timeout: float = 15.0) -> None:
    """Until every charge queue is empty and kombu holds no unacknowledged message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if charge_queues.read(client, QUEUE_NAME).ready == 0 and client.hlen(UNACKED) == 0:
            return
        time.sleep(0.2)


def measure(
    redis_url: str,
    *,
    workers: int,
    latency_ms: float,
    count: int,
    timeout: float,
    run_id: str,
    cost: bool = False,
    queue: str = client_queue(QUEUE_NAME, ANONYMOUS.name),  # where _enqueue's payments wait
) -> DrainResult:
    probe = sync_redis.Redis.from_url(redis_url)
    monitor: redis_cost.Monitor | None = None
    before: dict[str, int] = {}
    cost_result: redis_cost.RedisCost | None = None
    queued: list[tuple[int, int]] = []
    idle = 0.0
    if cost:
        idle_from, idle_t = redis_cost.stats(probe), time.perf_counter()
        time.sleep(3.0)
        idle_to = redis_cost.stats(probe)
        idle = (idle_to["commands"] - idle_from["commands"] - 2) / (time.perf_counter() - idle_t)
        before = redis_cost.stats(probe)
        monitor = redis_cost.Monitor(redis_url)

    def after_enqueue() -> None:
        if cost:
            queued.append(redis_cost.queue_bytes(probe, queue))

    async def go() -> DrainResult:
        nonlocal cost_result
        t0, done, ids, client = await _drain(
            redis_url, count, deadline=timeout, run_id=run_id, after_enqueue=after_enqueue
        )
        try:
            if monitor is not None:
                _wait_acked(probe)
                after = redis_cost.stats(probe)
                monitor.stop()
                cost_result = redis_cost.per_payment(before, after, monitor, count)
                cost_result.idle_commands_per_s = idle
                cost_result.seconds = time.perf_counter() - t0
                size, length = queued[0] if queued else (0, 0)
                cost_result.queued_bytes = size / length if length else 0.0
                cost_result.kept_bytes, cost_result.fixed_bytes = redis_cost.kept_bytes(
                    probe, count
                )
            succeeded, failed = await _statuses(client, ids)
        finally:
            await client.aclose()
            probe.close()
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
            failed=failed,
            steady_rate=steady,
            overall_rate=n / total if total else 0.0,
            seconds=total,
            cost=cost_result,
        )

    return asyncio.run(go())
