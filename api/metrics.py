"""``GET /metrics``: Prometheus text for the API process and, read from Redis, the workers."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.responses import Response

from api.deps import RedisDep, SettingsDep
from api.schemas import error_responses
from shared.metrics import ACCEPTED, OUTCOMES, STRIPE_CALLS, ApiMetrics, FleetCollector
from shared.records import DEAD_LETTERS

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **error_responses(503),
    },
)
async def metrics(request: Request, redis: RedisDep, settings: SettingsDep) -> Response:
    """Prometheus exposition: accept latency, payments accepted, outcomes by status and error
    code, queue depth, dead letters, and Stripe call latency and errors from every worker."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(OUTCOMES)
        pipe.hgetall(STRIPE_CALLS)
        pipe.get(ACCEPTED)
        pipe.llen(settings.queue_name)
        pipe.zcard(DEAD_LETTERS)
        outcomes, stripe_calls, accepted, depth, dead = await pipe.execute()
    fleet = FleetCollector()
    fleet.outcomes, fleet.stripe = outcomes, stripe_calls
    fleet.accepted, fleet.queue_depth, fleet.dead_letters = int(accepted or 0), depth, dead
    registry = CollectorRegistry(auto_describe=False)
    registry.register(fleet)
    own: ApiMetrics = request.app.state.metrics
    body = generate_latest(own.registry) + generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
