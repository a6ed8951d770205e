"""What the routes read from a request and how they answer with a model, in one place.

Every route module imports these from here, never from another route module, so that the
route modules depend on nothing but the shared parts of ``api/`` (no import circle).
"""

from __future__ import annotations

import re
import secrets

import orjson
from fastapi import Request
from pydantic import BaseModel
from starlette.responses import Response

from api.error_responses import JSON
from api.schemas import PAYMENT_ID_PATTERN, QueueStanding, dump, payment_json
from shared.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from shared.payments.payment_records import PaymentRecord
from shared.payments.states import CHARGED_STATUSES, Status

PAYMENT_ID = re.compile(PAYMENT_ID_PATTERN)
_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")
_WAIT = re.compile(r"[0-9]{1,2}")  # MAX_WAIT_SECONDS is at most 30


def wait_seconds(raw: str | None, maximum: int) -> int:
    """``?wait=N``: whole seconds from 0 to ``maximum`` (MAX_WAIT_SECONDS)."""
    if raw is None:
        return 0
    if not _WAIT.fullmatch(raw) or int(raw) > maximum:
        raise InvalidRequest(
            f"wait must be a whole number of seconds from 0 to {maximum}",
            code="wait_invalid",
            param="wait",
        )
    return int(raw)


async def read_json_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (never buffered whole)."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body must be at most {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body must be at most {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def client_idempotency_key(request: Request) -> str:
    """The Idempotency-Key header, checked; a fresh one when the client sent none."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return "auto_" + secrets.token_hex(16)
    return checked_idempotency_key(key, "Idempotency-Key")


def checked_idempotency_key(key: object, param: str) -> str:
    """A client's idempotency key (the header, or a batch item's ``idempotency_key``): 1-255
    printable ASCII characters, else 400 ``idempotency_key_invalid`` naming ``param``."""
    if not isinstance(key, str) or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidRequest(
            f"{param} must be 1-255 printable ASCII characters.",
            code="idempotency_key_invalid",
            param=param,
        )
    return key


def record_answer(
    record: PaymentRecord, queue: QueueStanding | None = None
) -> tuple[int, str, bytes]:
    """What a request for a payment answers as the payment stands, as a status, the body's
    member and its JSON: 200 and the payment once charged (or authorized, or an authorization
    released), the error's status and its error object once failed (or expired, or canceled),
    202 and the payment while still in progress (with ``queue``, where it stands, while
    queued)."""
    if record.status in CHARGED_STATUSES or (record.is_final and record.error is None):
        return 200, "payment", payment_json(record)
    if record.is_final and record.error is not None:
        error = {**record.error, "payment_id": record.id}
        return record.error_status or 402, "error", orjson.dumps(error)
    if record.status is not Status.QUEUED:
        queue = None
    return 202, "payment", payment_json(record, queue=queue)


def viewer_of(request: Request) -> str:
    """The calling client's name (or, with API_KEYS alone, its key's identity)."""
    client = request.state.client
    return str(getattr(client, "name", client))


def model_response(
    status: int, model: BaseModel, headers: dict[str, str] | None = None
) -> Response:
    return Response(dump(model), status_code=status, media_type=JSON, headers=headers)
