"""Signed callbacks out: the event catalogue, the callback task's message, the SSRF rules and the
Standard Webhooks signature (the ``standardwebhooks`` package, no hand-rolled crypto).

A callback's message is built here and pushed by the very Redis script that changes the state
(``finish``, ``transition``, ``stripe_refunds``, ``refund_finish``), and only when the payment
has an endpoint (its ``callback_url``, resolved at accept from the request or the client's
default): no state change goes without its callback, none is sent for a change that did not
happen. The worker side is ``worker.callbacks``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook

from shared import whsec
from shared.celery_message import task_message
from shared.config import Settings
from shared.errors import CallbackUrlRefused
from shared.money import format_minor
from shared.records import PaymentRecord, Status
from shared.refunds import RefundRecord, RefundStatus

CALLBACK_TASK = "payments.callback"
MAX_URL_LENGTH = 2048

# The event catalogue: what a client is told, and when.
PAYMENT_EVENTS = {
    Status.SUCCEEDED: "payment.succeeded",
    Status.FAILED: "payment.failed",
    Status.REQUIRES_ACTION: "payment.requires_action",
    Status.REFUNDED: "payment.refunded",
    Status.DISPUTED: "payment.disputed",
}
REFUND_EVENTS = {
    RefundStatus.SUCCEEDED: "refund.succeeded",
    RefundStatus.FAILED: "refund.failed",
}
EVENT_TYPES = sorted([*PAYMENT_EVENTS.values(), *REFUND_EVENTS.values()])


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
        "updated_at": record.updated_at,
    }
    if record.next_action:
        data["next_action"] = record.next_action
    if record.error:
        data["error"] = record.error
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


# --- signatures ------------------------------------------------------------------------------


def signing_secrets(settings: Settings) -> tuple[str, ...]:
    raw = settings.callback_signing_secrets
    return tuple(whsec.split(raw.get_secret_value() if raw else ""))


def client_signing_secrets(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Clients of API_CLIENTS with secrets of their own (``callback_signing_secrets``), by
    name: their callbacks are signed with these instead of CALLBACK_SIGNING_SECRETS. Raises
    ClientConfigError for a malformed entry (read when a worker starts)."""
    from shared.clients import load

    return {c.name: c.callback_signing_secrets for c in load(settings).clients
            if c.callback_signing_secrets}  # fmt: skip


def sign(secrets: tuple[str, ...], msg_id: str, at: datetime, body: str) -> str:
    """``webhook-signature``: one ``v1,<base64>`` per secret (the first is the current one;
    during a rotation receivers holding either secret verify)."""
    return " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets)


# --- SSRF --------------------------------------------------------------------------------------


def _host_allowed(host: str, allowed: str) -> bool:
    entries = [h.strip().lower() for h in allowed.split(",") if h.strip()]
    if not entries:
        return True
    for entry in entries:
        if entry.startswith(".") and (host.endswith(entry) or host == entry[1:]):
            return True
        if host == entry:
            return True
    return False


def address_refused(address: str) -> bool:
    """Loopback, link-local, private, multicast, reserved and unspecified addresses (and
    IPv4 ones hiding in IPv6) are not the public internet."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
        or ip.is_reserved or ip.is_unspecified
    )  # fmt: skip


def _names_this_network(host: str) -> bool:
    """A literal address that is not public, or a name of this host."""
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return address_refused(host)
    except ValueError:
        return False  # a name: judged on its resolved address at send time


def check_callback_url(url: str, settings: Settings) -> tuple[str, str, int]:
    """(scheme, host, port) of an endpoint the rules allow, judged without DNS: ``https`` only
    in production, no credentials, a host in CALLBACK_ALLOWED_HOSTS (when set), and no private
    address literal unless CALLBACK_ALLOW_PRIVATE_NETWORKS. Else CallbackUrlRefused. The
    resolved address is checked again at send time (worker.callbacks)."""
    if len(url) > MAX_URL_LENGTH:
        raise CallbackUrlRefused(f"callback_url must be at most {MAX_URL_LENGTH} characters.",
                                 param="callback_url")  # fmt: skip
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise CallbackUrlRefused("callback_url is not a URL.", param="callback_url") from None
    schemes = ("https",) if settings.environment == "production" else ("https", "http")
    if parts.scheme not in schemes:
        raise CallbackUrlRefused(
            f"callback_url must use {' or '.join(schemes)}.", param="callback_url"
        )
    host = (parts.hostname or "").lower()
    if not host or parts.username is not None or parts.password is not None:
        raise CallbackUrlRefused(
            "callback_url needs a host and no credentials.", param="callback_url"
        )
    if not _host_allowed(host, settings.callback_allowed_hosts):
        raise CallbackUrlRefused(
            f"callback_url's host {host} is not in CALLBACK_ALLOWED_HOSTS.", param="callback_url"
        )
    if not settings.callback_allow_private_networks and _names_this_network(host):
        raise CallbackUrlRefused(
            "callback_url points at a private, loopback or link-local address.",
            param="callback_url",
        )
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def callback_endpoint(settings: Settings, requested: str | None, client: str) -> str | None:
    """Where a new payment's callbacks go: its own ``callback_url`` (checked now: a refused
    one is a 400), else its client's default endpoint (CALLBACK_ENDPOINTS), else nowhere."""
    if requested is not None:
        check_callback_url(requested, settings)
        return requested
    return default_endpoints(settings).get(client)


def default_endpoints(settings: Settings) -> dict[str, str]:
    """CALLBACK_ENDPOINTS: ``<client>=<url>`` pairs (a client's name, or ``key_<12 hex>``)."""
    pairs = (
        entry.split("=", 1) for entry in settings.callback_endpoints.split(",") if "=" in entry
    )
    return {name.strip(): url.strip() for name, url in pairs if name.strip() and url.strip()}
