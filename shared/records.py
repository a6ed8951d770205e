"""The payment record: the source of truth for a payment's status, kept in Redis.

A record holds only what the service needs: ids, status, amount in minor units, currency, the
idempotency key and the fingerprint of the request that claimed it, Stripe ids, the error and
timestamps. No card data is ever stored. Records expire (``RECORD_TTL_SECONDS``, >= 24 h).

Keys (one Redis, no cluster):
- ``payments:record:{payment_id}``: hash, the record;
- ``payments:idem:{sha256(key)}``: the payment id that claimed an idempotency key;
- ``payments:events``: pub/sub channel; a worker publishes a payment id when its status is final;
- ``payments:lock:{payment_id}``: the lease of the worker charging it;
- ``payments:dead_letters``: sorted set (by time) of payments failed because Stripe was down;
- ``payments:pending``: sorted set of payments not yet final, scored by when the recovery sweep
  should look at them again (see worker.maintenance).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from shared.money import format_minor

RECORD_PREFIX = "payments:record:"
IDEMPOTENCY_PREFIX = "payments:idem:"
EVENTS_CHANNEL = "payments:events"
DEAD_LETTERS = "payments:dead_letters"
PENDING = "payments:pending"
LOCK_PREFIX = "payments:lock:"
CHARGE_TASK = "payments.charge"


class Status(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REQUIRES_ACTION = "requires_action"


FINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.REQUIRES_ACTION})


def new_payment_id() -> str:
    return "pay_" + secrets.token_hex(12)


def record_key(payment_id: str) -> str:
    return RECORD_PREFIX + payment_id


def lock_key(payment_id: str) -> str:
    return LOCK_PREFIX + payment_id


def idempotency_key_slot(key: str) -> str:
    """Where a client's key is claimed; hashed so that any printable key makes a short name."""
    return IDEMPOTENCY_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def request_fingerprint(
    *, account_id: str, amount_minor: int, currency: str, payment_method: str | None
) -> str:
    """Identifies a request's meaning: same key with another fingerprint is a different request."""
    canonical = f"{account_id}\x1f{amount_minor}\x1f{currency}\x1f{payment_method or ''}"
    return hashlib.sha256(canonical.encode()).hexdigest()


def stripe_idempotency_key(payment_id: str) -> str:
    """The key of every Stripe write for a payment: identical on each retry and redelivery."""
    return f"{payment_id}:charge"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    first_attempt_at: int | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def from_redis(cls, raw: Mapping[Any, Any]) -> PaymentRecord:
        h = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }
        return cls(
            id=h["id"],
            status=Status(h["status"]),
            account_id=h["account_id"],
            amount_minor=int(h["amount_minor"]),
            currency=h["currency"],
            idempotency_key=h["idempotency_key"],
            key_fingerprint=h["key_fingerprint"],
            created_at=h["created_at"],
            updated_at=h.get("updated_at", h["created_at"]),
            payment_method=h.get("payment_method") or None,
            payment_intent=h.get("payment_intent") or None,
            charge=h.get("charge") or None,
            next_action=h.get("next_action") or None,
            error=orjson.loads(h["error"]) if h.get("error") else None,
            error_status=int(h["error_status"]) if h.get("error_status") else None,
            attempts=int(h.get("attempts", 0)),
            first_attempt_at=int(h["first_attempt_at"]) if h.get("first_attempt_at") else None,
        )

    def to_public(self) -> dict[str, Any]:
        """What clients see; amounts as decimal strings in major units."""
        body: dict[str, Any] = {
            "id": self.id,
            "object": "payment",
            "status": self.status.value,
            "account_id": self.account_id,
            "amount": format_minor(self.amount_minor, self.currency),
            "currency": self.currency,
            "payment_method": self.payment_method,
            "idempotency_key": self.idempotency_key,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "payment_intent": self.payment_intent,
            "charge": self.charge,
            "confirmation": self.payment_intent if self.status is Status.SUCCEEDED else None,
        }
        if self.next_action:
            body["next_action"] = self.next_action
        if self.error is not None:
            body["error"] = self.error
        return body


def new_record_fields(
    *,
    payment_id: str,
    account_id: str,
    amount_minor: int,
    currency: str,
    payment_method: str | None,
    idempotency_key: str,
    fingerprint: str,
) -> dict[str, str]:
    created = now_iso()
    fields = {
        "id": payment_id,
        "status": Status.QUEUED.value,
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
    return fields
