"""The payment record: the source of truth for a payment's status, kept in Redis.

A record holds only what the service needs: ids, status, amount in minor units, currency, the
idempotency key and the fingerprint of the request that claimed it, the client's description and
metadata, Stripe ids, the error and timestamps. No card data is ever stored. Where it lives and
who writes it: ``shared.store``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.payments.metadata import canonical as canonical_metadata
from shared.payments.states import (
    FINAL_STATUSES,
    PAYMENT_INITIAL,
    SETTLED_STATUSES,
    CaptureStatus,
    Status,
)

CHARGE_TASK = "payments.charge"
CAPTURE_TASK = "payments.capture"
MANUAL = "manual"  # capture_method: the charge only authorizes
STRIPE_EVENT_TASK = "payments.stripe_event"


def payment_id_for(*, secret: bytes, client: str, idempotency_key: str) -> str:
    """The payment id of a client's Idempotency-Key: the same after any loss of our own state,
    so a retry reaches Stripe with the same idempotency key; unguessable without ``secret``.
    HMAC-SHA256 of the client and key, going on from a copy of the HMAC keyed once for
    ``secret`` (``hmac.HMAC.copy``), where ``hmac.digest`` keys anew on each call."""
    mac = _keyed(secret).copy()
    mac.update(f"{client}\x1f{idempotency_key}".encode())
    return "pay_" + mac.digest()[:12].hex()


@functools.lru_cache(maxsize=8)
def _keyed(secret: bytes) -> hmac.HMAC:
    """The HMAC-SHA256 of ``secret`` with nothing fed yet: each payment id goes on from a copy."""
    return hmac.new(secret, digestmod=hashlib.sha256)


def request_fingerprint(
    *,
    account_id: str,
    amount_minor: int,
    currency: str,
    payment_method: str | None,
    description: str | None = None,
    metadata: Mapping[str, str] | None = None,
    deadline: str | None = None,
    capture_method: str = "automatic",
) -> str:
    """Identifies a request's meaning: same key with another fingerprint is a different request.
    A request without description, metadata and deadline, captured automatically, keeps the
    fingerprint it always had, so a record claimed before they existed still matches its
    replay. ``deadline`` is the
    deadline as the request gave it (``expires_at=...`` or ``expires_in=...``), not the time
    it stands for: a retry of ``expires_in`` a minute later is the same request."""
    canonical = f"{account_id}\x1f{amount_minor}\x1f{currency}\x1f{payment_method or ''}"
    if description or metadata:
        canonical += f"\x1f{description or ''}\x1f{canonical_metadata(metadata or {})}"
    if deadline:
        canonical += f"\x1f{deadline}"
    if capture_method == MANUAL:
        canonical += f"\x1fcapture_method={MANUAL}"
    return hashlib.sha256(canonical.encode()).hexdigest()


def stripe_idempotency_key(payment_id: str) -> str:
    """The key of every Stripe write for a payment: identical on each retry and redelivery."""
    return f"{payment_id}:charge"


def capture_idempotency_key(payment_id: str, action: str, seq: int) -> str:
    """The key of a capture's (or void's) Stripe write: ``{payment_id}:capture`` (``:void``),
    the same on every retry; a capture asked again after one failed is another request
    (``{payment_id}:capture:2``...)."""
    return f"{payment_id}:{action}" if seq <= 1 else f"{payment_id}:{action}:{seq}"


def now_iso() -> str:
    """Now as a record's timestamp (UTC, milliseconds, ``Z``): ``datetime.now(UTC)``'s
    milliseconds, which floor the same clock's nanoseconds."""
    return iso_from_ms(time.time_ns() // 1_000_000)


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    id: str
    status: Status
    account_id: str
    amount_minor: int
    currency: str
    idempotency_key: str
    key_fingerprint: str
    created_at: str
    updated_at: str
    payment_method: str | None = None
    payment_intent: str | None = None
    charge: str | None = None
    next_action: str | None = None
    error: dict[str, Any] | None = None
    error_status: int | None = None
    attempts: int = 0
    # Set by a dead-letter replay: look for an earlier charge before making one.
    reconcile_first: bool = False
    reconcile_attempts: int = 0
    # The client that made it (its name): the only one that sees it, besides admins.
    client: str | None = None
    # The PaymentIntent's client_secret while the customer must act (3-D Secure), for the
    # merchant's front end (Stripe.js); never logged.
    client_secret: str | None = field(default=None, repr=False)
    # Refunds (minor units): what our succeeded refunds add up to, what Stripe last said the
    # charge's amount_refunded is (dashboard refunds included), and what refunds in flight hold.
    refunded_minor: int = 0
    stripe_refunded_minor: int = 0
    refund_reserved_minor: int = 0
    callback_url: str | None = None
    # The client's, sent to Stripe on the PaymentIntent and shown in every answer.
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # Its deadline, if the request gave one: ISO 8601 for answers, ms since the epoch for the
    # scripts that compare it (start_attempt, expire).
    expires_at: str | None = None
    expires_ms: int | None = None
    # The client's queue its charge waits in, and its place in the order of the client's
    # accepts (the queue position's estimate: api.queue_position).
    queue: str | None = None
    queue_seq: int | None = None
    # Authorize now, capture later: ``manual`` makes the charge an authorization. The capture
    # or void asked of it (``capture_action``), where that stands, and what it captured.
    capture_method: str = "automatic"
    capture_action: str | None = None  # capture, void
    capture_ask: str | None = None  # the request as asked (``capture:all``...): replays match
    capture_status: CaptureStatus | None = None
    capture_amount_minor: int | None = None  # asked; None: all that was authorized
    capture_seq: int = 0  # captures and voids asked so far (the Stripe key's suffix)
    capture_attempts: int = 0
    capture_reconcile_attempts: int = 0
    capture_error: dict[str, Any] | None = None
    capture_error_status: int | None = None
    amount_captured_minor: int | None = None
    captured_at: str | None = None
    canceled_at: str | None = None
    cancellation_reason: str | None = None

    @property
    def charged_minor(self) -> int:
        """What the charge took: the captured amount of an authorization, else the amount."""
        if self.amount_captured_minor is not None:
            return self.amount_captured_minor
        return self.amount_minor

    @property
    def amount_refunded_minor(self) -> int:
        """Refunded as far as anyone knows (Stripe's figure includes ours once it has it)."""
        return max(self.refunded_minor, self.stripe_refunded_minor)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def is_settled(self) -> bool:
        return self.status in SETTLED_STATUSES

    @classmethod
    def from_redis(cls, raw: Mapping[Any, Any]) -> PaymentRecord:
        """A record from its Redis hash (names and values as bytes or str). A new record's
        fields as this process wrote them (str, only NEW_RECORD_FIELDS) take a shorter way
        with the same result: every accept reads one back."""
        if NEW_RECORD_FIELDS.issuperset(raw) and _STR_ONLY.issuperset(map(type, raw.values())):
            return _from_new_fields(raw)
        return cls._from_hash(raw)

    @classmethod
    def _from_hash(cls, raw: Mapping[Any, Any]) -> PaymentRecord:
        h: Mapping[str, Any]
        if all(type(k) is str and type(v) is str for k, v in raw.items()):
            h = raw  # written by this process (a new record's fields): nothing to decode
        else:
            h = {
                (k.decode() if isinstance(k, bytes) else k): (
                    v.decode() if isinstance(v, bytes) else v
                )
                for k, v in raw.items()
            }
        return _build_record(
            **_new_field_values(h),
            payment_intent=h.get("payment_intent") or None,
            charge=h.get("charge") or None,
            next_action=h.get("next_action") or None,
            error=orjson.loads(h["error"]) if h.get("error") else None,
            error_status=int(h["error_status"]) if h.get("error_status") else None,
            reconcile_first=h.get("reconcile_first") == "1",
            reconcile_attempts=int(h.get("reconcile_attempts", 0)),
            client_secret=h.get("client_secret") or None,
            refunded_minor=int(h.get("refunded_minor", 0)),
            stripe_refunded_minor=int(h.get("stripe_refunded_minor", 0)),
            refund_reserved_minor=int(h.get("refund_reserved_minor", 0)),
            capture_action=h.get("capture_action") or None,
            capture_ask=h.get("capture_ask") or None,
            capture_status=CaptureStatus(h["capture_status"]) if h.get("capture_status") else None,
            capture_amount_minor=_int_or_none(h.get("capture_amount_minor")),
            capture_seq=int(h.get("capture_seq", 0)),
            capture_attempts=int(h.get("capture_attempts", 0)),
            capture_reconcile_attempts=int(h.get("capture_reconcile_attempts", 0)),
            capture_error=orjson.loads(h["capture_error"]) if h.get("capture_error") else None,
            capture_error_status=_int_or_none(h.get("capture_error_status")),
            amount_captured_minor=_int_or_none(h.get("amount_captured_minor")),
            captured_at=h.get("captured_at") or None,
            canceled_at=h.get("canceled_at") or None,
            cancellation_reason=h.get("cancellation_reason") or None,
        )


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value else None


# What a new record's hash may hold: new_record_fields' names, and what the accept adds (its
# callback_url, queue, place in the queue and enqueue time).
NEW_RECORD_FIELDS = frozenset(
    {
        "id",
        "status",
        "account_id",
        "amount_minor",
        "currency",
        "idempotency_key",
        "key_fingerprint",
        "created_at",
        "updated_at",
        "attempts",
        "payment_method",
        "client",
        "description",
        "metadata",
        "expires_ms",
        "expires_at",
        "capture_method",
        "callback_url",
        "queue",
        "queue_seq",
        "enqueued_at",
    }
)
_STR_ONLY = frozenset({str})
_STATUS_OF = {status.value: status for status in Status}  # Status(value), without its call


def _slot_builder() -> Callable[..., PaymentRecord]:
    """A PaymentRecord from keyword arguments (each field's default where not given, a field
    with a default factory always given) without ``__init__``: a frozen dataclass sets each of
    its ~45 fields through ``object.__setattr__``, the larger part of reading a record. Made
    from the dataclass's own fields, as dataclasses makes ``__init__``, so it cannot miss one."""
    scope: dict[str, Any] = {"_new": object.__new__, "_cls": PaymentRecord}
    params, sets = [], []
    for f in fields(PaymentRecord):
        scope[f"_set_{f.name}"] = PaymentRecord.__dict__[f.name].__set__
        if f.default is not MISSING:
            scope[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        else:
            params.append(f.name)
        sets.append(f"    _set_{f.name}(record, {f.name})\n")
    head = f"def build(*, {', '.join(params)}):\n    record = _new(_cls)\n"
    exec(head + "".join(sets) + "    return record\n", scope)  # noqa: S102 - field names only
    build: Callable[..., PaymentRecord] = scope["build"]
    return build


_build_record = _slot_builder()


def _from_new_fields(h: Mapping[str, str]) -> PaymentRecord:
    """``PaymentRecord._from_hash`` for a hash of NEW_RECORD_FIELDS alone, all str: the same
    reading of each of them, every other field its default (what ``_from_hash`` makes of an
    absent one)."""
    return _build_record(**_new_field_values(h))


def _new_field_values(h: Mapping[str, Any]) -> dict[str, Any]:
    """The record's fields that NEW_RECORD_FIELDS hold, read from the hash ``h`` (str): the one
    reading of them, for a new record's hash and for any other."""
    get = h.get
    metadata = get("metadata")
    expires_ms = get("expires_ms")
    queue_seq = get("queue_seq")
    return dict(
        id=h["id"],
        status=_STATUS_OF.get(h["status"]) or Status(h["status"]),
        account_id=h["account_id"],
        amount_minor=int(h["amount_minor"]),
        currency=h["currency"],
        idempotency_key=h["idempotency_key"],
        key_fingerprint=h["key_fingerprint"],
        created_at=h["created_at"],
        updated_at=get("updated_at", h["created_at"]),
        payment_method=get("payment_method") or None,
        attempts=int(get("attempts", 0)),
        client=get("client") or None,
        callback_url=get("callback_url") or None,
        description=get("description") or None,
        metadata=orjson.loads(metadata) if metadata else {},
        expires_at=get("expires_at") or None,
        expires_ms=int(expires_ms) if expires_ms else None,
        queue=get("queue") or None,
        queue_seq=int(queue_seq) if queue_seq else None,
        capture_method=get("capture_method") or "automatic",
    )


def new_record_fields(
    *,
    payment_id: str,
    account_id: str,
    amount_minor: int,
    currency: str,
    payment_method: str | None,
    idempotency_key: str,
    fingerprint: str,
    client: str | None = None,
    description: str | None = None,
    metadata: Mapping[str, str] | None = None,
    expires_ms: int | None = None,
    capture_method: str = "automatic",
    created_at: str | None = None,
) -> dict[str, str]:
    """A new payment's record as written; ``created_at`` (``now_iso``'s) when the payments
    of one request share it, else now."""
    created = created_at or now_iso()
    fields = {
        "id": payment_id,
        "status": PAYMENT_INITIAL.value,
        "account_id": account_id,
        "amount_minor": str(amount_minor),
        "currency": currency,
        "idempotency_key": idempotency_key,
        "key_fingerprint": fingerprint,
        "created_at": created,
        "updated_at": created,
        "attempts": "0",
    }
    if payment_method:
        fields["payment_method"] = payment_method
    if client:
        fields["client"] = client
    if description:
        fields["description"] = description
    if metadata:
        fields["metadata"] = orjson.dumps(metadata).decode()
    if expires_ms is not None:
        fields["expires_ms"] = str(expires_ms)
        fields["expires_at"] = iso_from_ms(expires_ms)
    if capture_method == MANUAL:
        fields["capture_method"] = MANUAL
    return fields


def iso_from_ms(ms: int) -> str:
    """A record's timestamp (UTC, milliseconds, ``Z``) from ms since the epoch. Within the
    minute of the last one made, only its seconds are written (``_datetime_iso``'s string):
    every accept stamps one or more, and a datetime's isoformat costs several times more."""
    global _last_minute
    minute, rest = divmod(ms, 60_000)
    known, prefix = _last_minute
    if minute != known:
        stamp = _datetime_iso(ms)
        _last_minute = (minute, stamp[:-7])  # up to the seconds: "2026-01-01T12:00:"
        return stamp
    seconds, millis = divmod(rest, 1000)
    return prefix + _SECONDS[seconds] + _MILLIS[millis]


def _datetime_iso(ms: int) -> str:
    when = datetime.fromtimestamp(ms / 1000, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# "00." to "59." and "000Z" to "999Z": cheaper picked than formatted.
_SECONDS = tuple(f"{seconds:02d}." for seconds in range(60))
_MILLIS = tuple(f"{millis:03d}Z" for millis in range(1000))
# The minute of the last timestamp iso_from_ms made (ms // 60_000), and its string up to the
# seconds; one tuple, replaced whole, so that threads read a matching pair.
_last_minute: tuple[int, str] = (0, _datetime_iso(0)[:-7])


def ms_from_iso(stamp: str) -> int:
    """A record's timestamp (as ``iso_from_ms`` writes it) in ms since the epoch."""
    return round(datetime.fromisoformat(stamp).timestamp() * 1000)
