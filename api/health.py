"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from redis.exceptions import RedisError
from starlette.responses import Response

from api.deps import RedisDep
from api.errors import STORE_RETRY_AFTER, error_response, json_response
from api.schemas import error_responses
from shared.errors import StoreUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Response:
    """The process is alive (no dependency is checked)."""
    return json_response(200, {"status": "ok"})


@router.get("/readyz", responses=error_responses(503))
async def readyz(redis: RedisDep) -> Response:
    """Ready to accept payments: Redis answers."""
    try:
        await redis.ping()
    except (RedisError, OSError):
        return error_response(StoreUnavailable(), headers={"Retry-After": STORE_RETRY_AFTER})
    return json_response(200, {"status": "ready", "redis": "ok"})
