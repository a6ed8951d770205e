"""Callbacks out: the event catalogue, what a callback says, and the callback task's message.
Signatures: ``shared.callbacks.signing``; where callbacks may go: ``shared.callbacks.url_rules``.

A callback's message is built here and pushed by the very Redis script that changes the state
(``finish``, ``transition``, ``stripe_refunds``, ``refund_finish``, ``expire``, ``cancel``),
and only when the payment has an endpoint (its ``callback_url``, resolved at accept from the
request or the client's default): no state change goes without its callback, none is sent for
a change that did not happen. The worker side is ``worker.callback_delivery``.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Any

from shared.celery_message import task_message
from shared.payments.money import format_minor
from shared.payments.payment_records import MANUAL, PaymentRecord
from shared.payments.refund_records import RefundRecord
from shared.payments.states import RefundStatus, Status
from shared.settings.service_settings import Settings

CALLBACK_TASK = "payments.callback"

# The event catalogue: what a client is told, and when.
PAYMENT_EVENTS = {
    Status.SUCCEEDED: "payment.succeeded",
    Status.FAILED: "payment.failed",
    Status.REQUIRES_ACTION: "payment.requires_action",
    Status.REFUNDED: "payment.refunded",
    Status.DISPUTED: "payment.disputed",
    # Never sent to Stripe, never charged (cancel.lua and expire.lua push these).
    Status.EXPIRED: "payment.expired",
    Status.REQUIRES_CAPTURE: "payment.requires_capture",
    Status.CANCELED: "payment.canceled",
}
REFUND_EVENTS = {
    RefundStatus.SUCCEEDED: "refund.succeeded",
    RefundStatus.FAILED: "refund.failed",
}


def event_id(event_type: str, object_id: str) -> str:
    """Stable per event (the receiver's dedupe key, ``webhook-id``): the same move of the same
    object always has the same id, whichever retry or redelivery sends it."""
    return "evt_" + hashlib.sha256(f"{object_id}\x1f{event_type}".encode()).hexdigest()[:24]


def callback_message(
    settings: Settings,
    event_type: str,
    payment_id: str,
    refund_id: str = "",
    *,
    attempt: int = 1,
    occurred_ms: int | None = None,
) -> bytes:
    """The ``payments.callback`` task for one event, on CALLBACK_QUEUE."""
    occurred = int(time.time() * 1000) if occurred_ms is None else occurred_ms
    evt = event_id(event_type, refund_id or payment_id)
    return task_message(
        task_name=CALLBACK_TASK,
        task_id=f"{evt}:{attempt}",
        args=(evt, event_type, payment_id, refund_id, occurred, attempt),
        queue=settings.callback_queue,
        headers={"enqueued_at": int(time.time() * 1000)},
    )


def payment_callback(settings: Settings, payment_id: str, status: Status) -> bytes:
    """The message for a payment moving to ``status`` (empty when clients are not told)."""
    event_type = PAYMENT_EVENTS.get(status)
    return callback_message(settings, event_type, payment_id) if event_type else b""


def refund_callbacks(
    settings: Settings, refund: RefundRecord, status: RefundStatus
) -> tuple[bytes, bytes]:
    """A refund's outcome: its own event, and ``payment.refunded`` should the payment become
    refunded in the same step."""
    event_type = REFUND_EVENTS.get(status)
    own = (
        callback_message(settings, event_type, refund.payment_id, refund.id) if event_type else b""
    )
    return own, payment_callback(settings, refund.payment_id, Status.REFUNDED)


# --- what a callback says --------------------------------------------------------------------


def payment_data(record: PaymentRecord) -> dict[str, Any]:
    """The payment as a callback shows it (as it stands when sent; no client_secret)."""
    data: dict[str, Any] = {
        "id": record.id,
        "object": "payment",
        "status": record.status.value,
        "account_id": record.account_id,
        "amount": format_minor(record.amount_minor, record.currency),
        "currency": record.currency,
        "amount_refunded": format_minor(record.amount_refunded_minor, record.currency),
        "idempotency_key": record.idempotency_key,
        "payment_intent": record.payment_intent,
        "charge": record.charge,
        "description": record.description,
        "metadata": record.metadata,
        "updated_at": record.updated_at,
    }
    if record.next_action:
        data["next_action"] = record.next_action
    if record.error:
        data["error"] = record.error
    if record.capture_method == MANUAL:  # an authorization: what it took, or why it ended
        data["capture_method"] = MANUAL
        if record.amount_captured_minor is not None:
            data["amount_captured"] = format_minor(record.amount_captured_minor, record.currency)
        if record.cancellation_reason:
            data["cancellation_reason"] = record.cancellation_reason
    return data


def refund_data(refund: RefundRecord) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": refund.id,
        "object": "refund",
        "payment_id": refund.payment_id,
        "status": refund.status.value,
        "amount": format_minor(refund.amount_minor, refund.currency),
        "currency": refund.currency,
        "idempotency_key": refund.idempotency_key,
        "stripe_refund": refund.stripe_refund,
        "updated_at": refund.updated_at,
    }
    if refund.error:
        data["error"] = refund.error
    return data


def event_body(evt: str, event_type: str, occurred_ms: int, data: dict[str, Any]) -> dict[str, Any]:
    """The Standard Webhooks payload: ``type``, ``timestamp`` and ``data`` (and our ``id``)."""
    when = datetime.fromtimestamp(occurred_ms / 1000, UTC)
    timestamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"id": evt, "type": event_type, "timestamp": timestamp, "data": data}
