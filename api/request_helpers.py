"""What the routes read from a request and how they answer with a model, in one place.

Every route module imports these from here, never from another route module, so that the
route modules depend on nothing but the shared parts of ``api/`` (no import circle).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from api.error_responses import JSON, json_response, validation_error, with_retry_after
from api.schemas import PAYMENT_ID_PATTERN, QueueFigures, dump, payment_json
from api.waiter import PaymentWaiter, Settles
from shared.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from shared.payments.payment_records import PaymentRecord
from shared.payments.states import CHARGED_STATUSES, Status
from shared.settings.api_clients import Client

PAYMENT_ID = re.compile(PAYMENT_ID_PATTERN)
_WAIT = re.compile(r"[0-9]{1,2}")  # MAX_WAIT_SECONDS is at most 30

M = TypeVar("M", bound=BaseModel)
S = TypeVar("S", bound=Settles)


_WAIT_ONLY = frozenset({"wait"})
# A read of one object takes no query parameter at all.
NO_PARAMETERS: frozenset[str] = frozenset()
# The answer to one it does not take, for the OpenAPI document of such a read.
UNKNOWN_PARAMETER = InvalidRequest(
    "Received unknown parameter: expand", code="parameter_unknown", param="expand"
)


def refuse_unknown_parameters(request: Request, taken: frozenset[str]) -> None:
    """400 ``parameter_unknown`` for a query parameter the route does not take, as Stripe
    answers: a misspelt one (``?wiat=10``, ``?stauts=failed``) silently left out would do less,
    or list more, than the client asked for."""
    if not request.scope["query_string"]:
        return
    for name in request.query_params:
        if name not in taken:
            raise InvalidRequest(
                f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )


def wait_of(request: Request, maximum: int) -> int:
    """A write route's one query parameter, ``?wait=N`` (``wait_seconds``); any other is a
    400 ``parameter_unknown`` (a misspelt ``?wiat=10`` would not wait)."""
    refuse_unknown_parameters(request, _WAIT_ONLY)
    return wait_seconds(request.query_params.get("wait"), maximum)


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


async def read_body_model(
    request: Request, model: type[M], limit: int, *, optional: bool = False
) -> M:
    """The JSON body read as ``model`` (400 naming the fields it gets wrong); ``optional``: a
    request with no body (no length, or a length of 0, whatever its Content-Type: ``curl -d ''``
    sends a form's) asks for ``model()``."""
    length = request.headers.get("content-length")
    # No body: a length of 0, or no length and no Content-Type (a chunked body has a type).
    if optional and (length == "0" or (length is None and not request.headers.get("content-type"))):
        return model()
    body = await read_json_body(request, limit)
    try:
        return model.model_validate_json(body or b"{}" if optional else body)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False)) from None


async def settled_within(
    request: Request, key: str, record: S, wait: int, current: Callable[[], Awaitable[S]]
) -> S:
    """``?wait``: ``record`` once settled (``current()`` re-reads it when ``key``'s record is
    told to have moved), or as it stands after ``wait`` seconds."""
    if not wait or record.is_settled:
        return record
    waiter: PaymentWaiter = request.app.state.waiter
    return await waiter.wait(key, wait, current)


def operation_headers(location: str, idempotency_key: str, *, replayed: bool) -> dict[str, str]:
    """An operation's answer headers: Location to poll, the Idempotency-Key it was asked under,
    and ``Idempotent-Replayed: true`` when the answer is to a request made before."""
    headers = {"Location": location, "Idempotency-Key": idempotency_key}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return headers


def failed_answer(status: int, error: dict[str, Any], headers: dict[str, str]) -> Response:
    """An operation that failed: its error object under ``error``, with Retry-After where
    the status asks for one."""
    return json_response(status, {"error": error}, with_retry_after(status, headers))


def principal_of(request: Request) -> Client | None:
    """The calling client as the authentication set it (None where none ran)."""
    principal: Client | None = getattr(request.state, "principal", None)
    return principal


def client_idempotency_key(request: Request) -> str:
    """The Idempotency-Key header, checked; a fresh one when the client sent none."""
    return sent_idempotency_key(request) or "auto_" + secrets.token_hex(16)


def sent_idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header of a request that is idempotent by what it asks (a capture,
    a void or cancel: one a payment), checked as everywhere and answered back; None when the
    client sent none."""
    key = request.headers.get("idempotency-key")
    return None if key is None else checked_idempotency_key(key, "Idempotency-Key")


def checked_idempotency_key(key: object, param: str) -> str:
    """A client's idempotency key (the header, or a batch item's ``idempotency_key``): 1-255
    printable ASCII characters, else 400 ``idempotency_key_invalid`` naming ``param``."""
    # [\x20-\x7e]{1,255}: among ASCII characters, the printable ones are exactly those.
    if not (isinstance(key, str) and 0 < len(key) <= 255 and key.isascii() and key.isprintable()):
        raise InvalidRequest(
            f"{param} must be 1-255 printable ASCII characters.",
            code="idempotency_key_invalid",
            param=param,
        )
    return key


def record_answer(
    record: PaymentRecord, queue: QueueFigures | None = None
) -> tuple[int, str, bytes]:
    """What a request for a payment answers as the payment stands, as a status, the body's
    member and its JSON: 200 and the payment once charged (or authorized, or an authorization
    released), the error's status and its error object once failed (or expired, or canceled),
    202 and the payment while still in progress (with ``queue``, where it stands, while
    queued)."""
    if record.status is Status.QUEUED:  # every new payment: neither charged nor final
        return 202, "payment", payment_json(record, queue=queue)
    if record.status in CHARGED_STATUSES or (record.is_final and record.error is None):
        return 200, "payment", payment_json(record)
    if record.is_final and record.error is not None:
        error = {**record.error, "payment_id": record.id}
        return record.error_status or 402, "error", orjson.dumps(error)
    return 202, "payment", payment_json(record)  # in progress, no longer queued


def viewer_of(request: Request) -> str:
    """The calling client's name (or, with API_KEYS alone, its key's identity)."""
    client = request.state.client
    return str(getattr(client, "name", client))


def model_response(
    status: int, model: BaseModel, headers: dict[str, str] | None = None
) -> Response:
    return Response(dump(model), status_code=status, media_type=JSON, headers=headers)
