"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from redis.exceptions import RedisError
from starlette.responses import Response

from api.deps import RedisDep
from api.error_responses import JSON, STORE_RETRY_AFTER, error_response
from api.schemas import Health, Readiness, dump, error_responses
from shared.errors import StoreUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    """The process is alive (no dependency is checked)."""
    return Response(dump(Health(status="ok")), media_type=JSON)


@router.get("/readyz", response_model=Readiness, responses=error_responses(503))
async def readyz(redis: RedisDep) -> Response:
    """Ready to accept payments: Redis answers."""
    try:
        await redis.ping()
    except (RedisError, OSError):
        return error_response(StoreUnavailable(), headers={"Retry-After": STORE_RETRY_AFTER})
    return Response(dump(Readiness(status="ready", redis="ok")), media_type=JSON)
