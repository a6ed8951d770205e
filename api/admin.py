"""Operator routes, for clients with the ``admin`` scope: dead letters over HTTP.

``GET /admin/dead-letters`` lists the payments that failed because Stripe stayed unreachable;
``POST /admin/dead-letters/{id}/replay`` puts one back in the queue (reconciled before any new
charge, as ``python -m worker.dead_letters replay`` does). Every replay is logged with the
admin client's name. Anyone without the scope gets 404, as for a route that does not exist.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from api.auth import bearer_key
from api.deps import AdminStoreDep
from api.operation_docs import RATE_LIMIT, error_responses, guarded_responses, read_by_hand
from api.request_helpers import model_response
from api.schemas import Payment, payment_view
from shared.errors import NotFound, StoreUnavailable
from shared.settings.api_clients import ANONYMOUS, Client

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(bearer_key)],
    responses=guarded_responses(),
)
log = structlog.get_logger(__name__)


class DeadLetter(BaseModel):
    id: str = Field(description="The payment id.")
    dead_lettered_at: str
    payment: Payment | None = Field(description="The payment, unless its record expired.")


class DeadLetters(BaseModel):
    object: str = "list"
    data: list[DeadLetter]


class Replayed(BaseModel):
    id: str
    replayed: bool = True


def _admin(request: Request) -> Client:
    principal: Client = getattr(request.state, "principal", ANONYMOUS)
    if not principal.is_admin:
        raise NotFound(f"No route for {request.method} {request.url.path}")
    return principal


@router.get(
    "/dead-letters",
    operation_id="list_dead_letters",
    response_model=DeadLetters,
    responses={
        200: {"headers": RATE_LIMIT},
        **error_responses(NotFound("No route for GET /admin/dead-letters"), StoreUnavailable),
    },
    openapi_extra=read_by_hand(),
)
async def list_dead_letters(request: Request, store: AdminStoreDep) -> Response:
    """Payments failed because Stripe stayed unreachable, oldest first."""
    _admin(request)
    entries = await asyncio.to_thread(store.dead_letters)
    data = [
        DeadLetter(
            id=payment_id,
            dead_lettered_at=datetime.fromtimestamp(score, UTC).isoformat(timespec="seconds"),
            payment=payment_view(record) if record is not None else None,
        )
        for payment_id, record, score in entries
    ]
    return model_response(200, DeadLetters(data=data))


@router.post(
    "/dead-letters/{payment_id}/replay",
    operation_id="replay_dead_letter",
    response_model=Replayed,
    responses={
        200: {"headers": RATE_LIMIT},
        **error_responses(
            NotFound("No route for POST /admin/dead-letters/pay_3f9c2a7be1d04c55a9e1f0d2/replay"),
            NotFound(
                "No dead letter pay_3f9c2a7be1d04c55a9e1f0d2",
                code="dead_letter_not_found",
                param="id",
            ),
            StoreUnavailable,
        ),
    },
    openapi_extra=read_by_hand(),
)
async def replay_dead_letter(request: Request, payment_id: str, store: AdminStoreDep) -> Response:
    """Requeue one dead letter; 404 if it is not (or no longer) one."""
    admin = _admin(request)
    if not await asyncio.to_thread(store.replay, payment_id):
        raise NotFound(f"No dead letter {payment_id}", code="dead_letter_not_found", param="id")
    log.warning("admin.dead_letter_replayed", admin=admin.name, payment_id=payment_id)
    return model_response(200, Replayed(id=payment_id))
