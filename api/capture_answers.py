"""The answers about a capture or void (``POST /payments/{id}/capture``, and the cancel of an
authorization): the payment as it stands, ``?wait`` until its capture or void settles."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from api.request_helpers import failed_answer, model_response, operation_headers, settled_within
from api.schemas import payment_view
from api.service import PaymentService
from shared.payments.payment_records import PaymentRecord
from shared.payments.states import CaptureStatus


@dataclass(frozen=True, slots=True)
class _Asked:
    """A payment as a capture's waiter sees it: settled once its capture or void is."""

    record: PaymentRecord

    @property
    def is_settled(self) -> bool:
        status = self.record.capture_status
        return status is not None and status is not CaptureStatus.PENDING


def capture_answer(
    record: PaymentRecord, viewer: str, *, replayed: bool = False, key: str | None = None
) -> Response:
    """The payment: 200 once its capture or void succeeded, the error's status once it failed,
    202 while pending or unknown. ``key``: the Idempotency-Key the client sent, answered back
    (else the payment's own)."""
    headers = operation_headers(
        f"/payments/{record.id}", key or record.idempotency_key, replayed=replayed
    )
    status = record.capture_status
    if status is CaptureStatus.FAILED and record.capture_error is not None:
        error = {**record.capture_error, "payment_id": record.id}
        return failed_answer(record.capture_error_status or 502, error, headers)
    view = payment_view(record, viewer=viewer)
    return model_response(200 if status is CaptureStatus.SUCCEEDED else 202, view, headers)


async def wait_for_capture(request: Request, record: PaymentRecord, wait: int) -> PaymentRecord:
    """``?wait``: until the capture or void settles, or ``wait`` seconds."""
    service: PaymentService = request.app.state.service

    async def current() -> _Asked:
        return _Asked(await service.get(record.id))

    return (await settled_within(request, record.id, _Asked(record), wait, current)).record
