"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from redis.exceptions import RedisError
from starlette.responses import Response

from api.deps import RedisDep
from api.error_responses import JSON, STORE_RETRY_AFTER, error_response
from api.operation_docs import error_responses, read_by_hand
from api.schemas import Health, Readiness, dump
from shared.errors import StoreUnavailable

router = APIRouter(tags=["health"])


@router.get(
    "/healthz", operation_id="check_health", response_model=Health, openapi_extra=read_by_hand()
)
async def healthz() -> Response:
    """The process is alive (no dependency is checked)."""
    return Response(dump(Health(status="ok")), media_type=JSON)


@router.get(
    "/readyz",
    operation_id="check_readiness",
    response_model=Readiness,
    responses=error_responses(StoreUnavailable),
    openapi_extra=read_by_hand(),
)
async def readyz(redis: RedisDep) -> Response:
    """Ready to accept payments: Redis answers."""
    try:
        await redis.ping()
    except (RedisError, OSError):
        return error_response(StoreUnavailable(), headers={"Retry-After": STORE_RETRY_AFTER})
    return Response(dump(Readiness(status="ready", redis="ok")), media_type=JSON)
