"""``POST /payments/batch``: many payments in one request, each answered as ``POST /payments``
would have answered it.

Each item is read by the very function ``POST /payments`` reads its body with
(``PaymentService.parse``), from the body as pydantic's JSON parser read it, as a single
payment's is, so it takes the same fields with the same checks and errors, and carries its own
``idempotency_key`` in place of the header. The items' claims go to Redis
together (``PaymentService.claim_many``): each item's claim, record and enqueue is the accept
script's, all or nothing on its own, and the batch is one call of that script (accept.lua). Each
item takes one token of the client's request budget, valid or not, as a request of
``POST /payments`` does; over the rate an item is answered 429 and the items before it stand.
A refusal of the batch itself (its body, its size, its scope) takes one token and is answered
``{"error": ...}``; otherwise the answer is ``{"results": [...]}``, one per item in order, with
the items' common status, or 207 when they differ.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, Depends, Request
from pydantic_core import from_json, to_json
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from api import scopes
from api.auth import bearer_key
from api.error_responses import JSON
from api.operation_docs import (
    ACCEPT_ERRORS,
    RATE_LIMIT,
    RETRY_AFTER,
    error_responses,
    guarded_responses,
    read_by_hand,
    success_response,
)
from api.rate_limit import take_token
from api.request_helpers import checked_idempotency_key, read_json_body, record_answer
from api.schemas import (
    MAX_BATCH_ITEMS,
    PaymentBatchAnswer,
    PaymentBatchItem,
    PaymentBatchResponse,
)
from api.service import NewPayment, PaymentService
from shared.errors import (
    IdempotencyKeyMismatch,
    InvalidRequest,
    PaymentServiceError,
)
from shared.payments.payment_records import now_iso
from shared.settings.service_settings import Settings

router = APIRouter(dependencies=[Depends(bearer_key)], responses=guarded_responses())
log = structlog.get_logger(__name__)

PATH = "/payments/batch"
KEY = "idempotency_key"


@router.api_route(
    PATH,
    methods=["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"],
    include_in_schema=False,
)
async def batch_other_methods() -> None:
    """Any method but POST on the batch's path: a 405 naming POST, rather than what
    ``GET /payments/{payment_id}`` would make of the path (a payment called "batch"). This
    router is included ahead of that one (api.main)."""
    raise StarletteHTTPException(405, headers={"Allow": "POST"})


def _batch_responses(*errors: PaymentServiceError | type[PaymentServiceError]) -> dict[Any, Any]:
    """The error statuses a batch answers: with ``results`` when every item got it, with
    ``error`` when the batch itself was refused."""
    responses = error_responses(*errors)
    for entry in responses.values():
        entry["model"] = PaymentBatchAnswer
    return responses


@router.post(
    PATH,
    operation_id="create_payment_batch",
    status_code=202,
    response_model=None,
    responses={
        200: success_response(
            PaymentBatchResponse, "Every item a replay of a succeeded payment.", RATE_LIMIT
        ),
        202: success_response(
            PaymentBatchResponse,
            "Every item accepted (or a replay still in progress).",
            RATE_LIMIT,
        ),
        207: success_response(
            PaymentBatchResponse,
            "The items' statuses differ: each item's own in its result.",
            RATE_LIMIT | {"Retry-After": RETRY_AFTER},
        ),
        **_batch_responses(
            InvalidRequest(
                f"payments must hold 1 to {MAX_BATCH_ITEMS} payments; this one holds 1001.",
                code="batch_too_large",
                param="payments",
            ),
            InvalidRequest(
                "A batch takes no Idempotency-Key header: each item carries its own "
                "idempotency_key.",
                code="idempotency_key_unsupported",
                param="Idempotency-Key",
            ),
            # Every item's status, when all items share it: what POST /payments answers.
            *ACCEPT_ERRORS,
            scopes.refused("payments"),
            IdempotencyKeyMismatch(param=KEY),
        ),
    },
    openapi_extra=read_by_hand(
        body={
            "type": "object",
            "required": ["payments"],
            "additionalProperties": False,
            "properties": {
                "payments": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_BATCH_ITEMS,
                    "items": PaymentBatchItem.model_json_schema(),
                    "description": "Each item: what POST /payments takes, and its "
                    "idempotency_key. Answered in this order.",
                }
            },
        }
    ),
)
async def create_payment_batch(request: Request) -> Response:
    """Accept up to 1,000 payments at once, each with its own idempotency key and answer.

    Each item is what POST /payments takes (same fields, checks and errors) plus
    ``idempotency_key``, and is answered in ``results``, in order, with the status and body
    POST /payments would have answered it with; a replayed batch answers each item as a
    replay. One item's error never refuses another. The answer's status is the items' common
    one, or 207 when they differ; a batch refused as a whole (not JSON, no ``payments``, more
    than 1,000 items, over MAX_BATCH_BODY_BYTES, an Idempotency-Key header, a ``wait``) is
    answered ``{"error": ...}``. Each item takes one token of the client's rate: over it, that
    item and the ones after it are 429s, those before it stand."""
    # Served by api.accept_asgi.AcceptFastPath ahead of the router where it is installed.
    state = request.app.state
    settings: Settings = state.settings
    service: PaymentService = state.service
    principal = getattr(request.state, "principal", None)
    try:
        scopes.check(request, "payments")
        _refuse_batch_options(request)
        body = await read_json_body(request, settings.max_batch_body_bytes)
        items = batch_items(body)
    except PaymentServiceError as refused:
        # The batch itself is refused: one request's token, as a refused POST /payments.
        refused.headers = {**refused.headers, **await take_token(service, principal)}
        raise
    client = request.state.client
    # One instant for the batch's payments, accepted together in one script call.
    created_at = now_iso()
    news = [_item(service, item, client, created_at) for item in items]
    answers, rate_headers = await service.claim_many(
        news, headers={"request_id": request.state.request_id}, principal=principal
    )
    statuses: list[int] = []
    parts: list[bytes] = []
    retry_after = 0
    # A new payment's line is at debug, dropped at INFO: the check made once, not each call.
    log_accepts = log.is_enabled_for(logging.DEBUG)
    for answer in answers:
        if isinstance(answer, PaymentServiceError):
            if answer.param == "Idempotency-Key":  # the item's key, not a header
                answer.param = KEY
            statuses.append(answer.status_code)
            error = orjson.dumps(answer.to_dict())
            parts.append(b'{"status":%d,"error":%s}' % (answer.status_code, error))
            wait = answer.headers.get("Retry-After", "")
            retry_after = max(retry_after, int(wait) if wait.isdigit() else 0)
            continue
        record = answer.record
        # As POST /payments logs them: a new payment at debug, a replay at info.
        if answer.replayed or log_accepts:
            (log.info if answer.replayed else log.debug)(
                "payment.replayed" if answer.replayed else "payment.accepted",
                payment_id=record.id,
                idempotency_key=record.idempotency_key,
                status=record.status.value,
            )
        status, member, part = record_answer(record, answer.queue)
        statuses.append(status)
        replayed = b',"replayed":true' if answer.replayed else b""
        parts.append(b'{"status":%d,"%s":%s%s}' % (status, member.encode(), part, replayed))
    status = statuses[0] if len(set(statuses)) == 1 else 207
    headers = dict(rate_headers)
    if retry_after:
        headers["Retry-After"] = str(retry_after)
    done = [a for a in answers if not isinstance(a, PaymentServiceError)]
    replays = sum(1 for a in done if a.replayed)
    log.info("payment_batch.answered", items=len(answers), accepted=len(done) - replays,
             replayed=replays, refused=len(answers) - len(done), status=status)  # fmt: skip
    body = b'{"results":[' + b",".join(parts) + b"]}"
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _refuse_batch_options(request: Request) -> None:
    """What POST /payments takes on the request and a batch does not: the Idempotency-Key
    header (each item has its own: a key for the whole batch would promise what the items'
    keys already give, and could disagree with them) and ``?wait``."""
    if "idempotency-key" in request.headers:
        raise InvalidRequest(
            "A batch takes no Idempotency-Key header: each item carries its own idempotency_key.",
            code="idempotency_key_unsupported",
            param="Idempotency-Key",
        )
    name = next(iter(request.query_params), None)
    if name is not None:
        hint = " (a batch answers at once: poll each payment, or take its callback)"
        raise InvalidRequest(
            f"Received unknown parameter: {name}" + (hint if name == "wait" else ""),
            code="parameter_unknown",
            param=name,
        )


def batch_items(body: bytes) -> list[Any]:
    """The batch's ``payments``, not yet read one by one: 400 for a body that is not
    ``{"payments": [1 to 1,000 items]}``."""
    try:
        # The parser POST /payments' body goes through (pydantic's), with its settings, so that
        # an item's values are what POST /payments would have read: orjson makes an integer
        # past 64 bits a float (a huge expires_in would be refused as not whole, not as too
        # large) and refuses 1e400 and NaN, which POST /payments reads as numbers.
        batch = from_json(body)
    except ValueError:
        raise InvalidRequest("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(batch, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    for name in batch:
        if name != "payments":
            raise InvalidRequest(
                f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )
    if "payments" not in batch:
        raise InvalidRequest(
            "Missing required parameter: payments", code="parameter_missing", param="payments"
        )
    items = batch["payments"]
    if not isinstance(items, list) or not items:
        raise InvalidRequest(
            f"payments must be a JSON array of 1 to {MAX_BATCH_ITEMS} payments.",
            code="payments_invalid",
            param="payments",
        )
    if len(items) > MAX_BATCH_ITEMS:
        raise InvalidRequest(
            f"payments must hold 1 to {MAX_BATCH_ITEMS} payments; this one holds {len(items)}. "
            "Send the rest in another batch.",
            code="batch_too_large",
            param="payments",
        )
    return items


def _item(
    service: PaymentService, item: Any, client: str, created_at: str
) -> NewPayment | PaymentServiceError:
    """One item as POST /payments reads its body (``PaymentService.parse``), its key taken
    out first; or the error POST /payments would answer it with."""
    try:
        if not isinstance(item, dict):
            raise InvalidRequest(
                "Each item of payments must be a JSON object.", code="invalid_json"
            )
        fields = dict(item)
        if KEY not in fields:
            raise InvalidRequest(
                f"Missing required parameter: {KEY}", code="parameter_missing", param=KEY
            )
        key = checked_idempotency_key(fields.pop(KEY), KEY)
        # Written back by pydantic too: every integer exactly, NaN and infinities as read.
        return service.parse(
            to_json(fields), idempotency_key=key, client=client, created_at=created_at
        )
    except PaymentServiceError as refused:
        return refused
