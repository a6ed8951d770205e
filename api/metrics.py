"""``GET /metrics``: Prometheus text for the API process and, read from Redis, the workers.

The queue depth counts what is not done yet: the messages waiting in the queue list (LLEN) plus
those reserved by workers and not yet acknowledged (kombu's ``unacked`` hash: running,
prefetched, or held for a retry countdown). With prefetch, LLEN alone reads near zero while a
fleet holds hundreds of charges. ``payments_queue_reserved`` is the second part on its own.
The callbacks' reserved messages are apart (``payments_callbacks_reserved``): a slow receiver
holds them, which more charge workers would not help.

When Redis does not answer, the answer is still 200 with ``payments_redis_up 0`` (and the API's
own metrics), so that the alert on it fires instead of the scrape just failing.
"""

from __future__ import annotations

import time
from datetime import datetime

import orjson
from fastapi import Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.responses import Response

from api import scopes
from api.deps import RedisDep, SettingsDep
from api.operation_docs import RATE_LIMIT, error_responses, read_by_hand
from shared.errors import StoreUnavailable
from shared.fleet_metrics import (
    ACCEPTED,
    OUTCOMES,
    STRIPE_CALLS,
    WORKER_HEARTBEAT,
    ApiMetrics,
    FleetCollector,
    message_wait_seconds,
)
from shared.settings.service_settings import Settings
from shared.store import charge_queues
from shared.store.keys import (
    CALLBACK_COUNTS,
    CLIENT_COUNTS,
    DEAD_LETTERS,
    STRIPE_BUDGET,
    STRIPE_BUDGET_COUNTS,
    TRANSITION_COUNTS,
    WEBHOOK_COUNTS,
    record_key,
)
from shared.store.stripe_budget_store import budget_states
from shared.stripe.limits import GLOBAL

router = scopes.guarded_router("metrics", tags=["operations"])


@router.get(
    "/metrics",
    operation_id="get_metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "headers": RATE_LIMIT},
        **error_responses(StoreUnavailable),
    },
    openapi_extra=read_by_hand(),
)
async def metrics(request: Request, redis: RedisDep, settings: SettingsDep) -> Response:
    """Prometheus exposition: accept latency, payments accepted, outcomes by status and error
    code, queue depth (ready + reserved) and the age of its oldest payment, dead letters, the
    workers' heartbeat, Redis reachability, and Stripe call latency and errors from every
    worker."""
    fleet = FleetCollector()
    try:
        await _read_fleet(redis, settings, fleet)
    except RedisError:
        fleet = FleetCollector()
        fleet.redis_up = False
    registry = CollectorRegistry(auto_describe=False)
    registry.register(fleet)
    own: ApiMetrics = request.app.state.metrics
    body = generate_latest(own.registry) + generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def _read_fleet(redis: Redis, settings: Settings, fleet: FleetCollector) -> None:
    # Every charge queue (QUEUE_NAME and each client's), read before the reserved count: a
    # message moving from a queue to a worker in between is counted twice, never missed.
    queues = await charge_queues.read_async(redis, settings.queue_name)
    held = await charge_queues.reserved_async(redis, settings.callback_queue)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(OUTCOMES)
        pipe.hgetall(STRIPE_CALLS)
        pipe.get(ACCEPTED)
        pipe.zcard(DEAD_LETTERS)
        pipe.get(WORKER_HEARTBEAT)
        pipe.hgetall(WEBHOOK_COUNTS)
        pipe.hgetall(TRANSITION_COUNTS)
        pipe.hgetall(CALLBACK_COUNTS)
        pipe.hgetall(CLIENT_COUNTS)
        pipe.hgetall(STRIPE_BUDGET)
        pipe.hgetall(STRIPE_BUDGET_COUNTS)
        results = await pipe.execute()
    outcomes, stripe_calls, accepted, dead, heartbeat = results[:5]
    fleet.webhooks, fleet.transitions, fleet.callbacks, fleet.clients = results[5:9]
    limits = settings.stripe_limits
    table = {GLOBAL: limits.global_rps, **limits.endpoints}
    fleet.budget = budget_states(results[9], results[10], table, time.time())
    fleet.budget_enabled = limits.enabled
    fleet.outcomes, fleet.stripe = outcomes, stripe_calls
    fleet.accepted, fleet.dead_letters = int(accepted or 0), dead
    fleet.queue_depth, fleet.queue_reserved = queues.ready + held.charges, held.charges
    fleet.callbacks_reserved = held.callbacks
    fleet.queue_lengths = queues.lengths
    fleet.worker_heartbeat = float(heartbeat) if heartbeat else None
    fleet.queue_oldest_age = await _oldest_age(redis, queues.oldest)


async def _oldest_age(redis: Redis, message: bytes | None) -> float:
    """Seconds the message at the head of the queue has waited: since its ``enqueued_at``
    header (ms, stamped on every message the service enqueues), else since its payment was
    accepted (the record's ``created_at``). 0 when the queue is empty or the age is unknown."""
    waited = message_wait_seconds(message)
    if waited is not None:
        return waited
    try:
        payment_id = str(orjson.loads(message or b"")["headers"]["id"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return 0.0
    created: bytes | str | None = await redis.hget(record_key(payment_id), "created_at")
    if not created:
        return 0.0
    try:
        text = created if isinstance(created, str) else created.decode()
        accepted_at = datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0
    return max(0.0, time.time() - accepted_at)
