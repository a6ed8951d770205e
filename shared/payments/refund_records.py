"""A refund record: what a client asked to give back of a succeeded payment, kept in Redis.

Like a payment, a refund's id derives from the client and its Idempotency-Key (so a retry finds
the same refund, and Stripe the same idempotency key, after any loss of our own state), and the
record is the claim of that key. Its amount is claimed against the payment in the same Redis
step that creates it, so concurrent refunds never add up to more than was charged
(``shared.store.refund_store``). Where it lives: ``payments:refund:{refund_id}``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from shared.payments.money import MAX_MINOR_UNITS, AmountError, exponent, format_minor
from shared.payments.states import FINAL_REFUND_STATUSES, RefundStatus

REFUND_TASK = "payments.refund"

_AMOUNT = re.compile(r"[0-9]{1,12}(\.[0-9]{1,12})?")


def refund_id_for(*, secret: bytes, client: str, idempotency_key: str) -> str:
    """The refund id of a client's Idempotency-Key (see
    shared.payments.payment_records.payment_id_for)."""
    digest = hmac.new(secret, f"refund\x1f{client}\x1f{idempotency_key}".encode(), hashlib.sha256)
    return "ref_" + digest.hexdigest()[:24]


def refund_fingerprint(*, payment_id: str, amount_minor: int | None) -> str:
    """The request's meaning: the same key for another payment or amount is another request
    (no amount, "the rest", is a request of its own)."""
    amount = "rest" if amount_minor is None else str(amount_minor)
    return hashlib.sha256(f"{payment_id}\x1f{amount}".encode()).hexdigest()


def refund_idempotency_key(refund_id: str) -> str:
    """The key of the Stripe Refund create: identical on every retry and redelivery."""
    return f"{refund_id}:refund"


def parse_refund_amount(text: str, currency: str) -> int:
    """A refund's amount in minor units: like a payment's, but any amount from one minor unit
    (Stripe's minimum charge does not apply to refunds)."""
    if not _AMOUNT.fullmatch(text):
        raise AmountError('amount must be a decimal string in major units such as "10.00"')
    value = Decimal(text)
    exp = exponent(currency)
    if -value.as_tuple().exponent > exp:  # type: ignore[operator]
        places = "no decimal places" if exp == 0 else f"at most {exp} decimal places"
        raise AmountError(f"amount in {currency} takes {places}")
    minor = int(value.scaleb(exp))
    if minor < 1 or minor > MAX_MINOR_UNITS:
        raise AmountError(
            f"amount must be from {format_minor(1, currency)} to "
            f"{format_minor(MAX_MINOR_UNITS, currency)} {currency}"
        )
    return minor


@dataclass(frozen=True, slots=True)
class RefundRecord:
    id: str
    payment_id: str
    status: RefundStatus
    amount_minor: int
    currency: str
    idempotency_key: str
    fingerprint: str
    created_at: str
    updated_at: str
    client: str | None = None
    stripe_refund: str | None = None
    error: dict[str, Any] | None = None
    error_status: int | None = None
    attempts: int = 0
    reconcile_attempts: int = 0  # looks at Stripe while the outcome is unknown

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_REFUND_STATUSES

    @property
    def is_settled(self) -> bool:
        """A waiting request is answered (unknown may still move)."""
        return self.status is not RefundStatus.PENDING

    @classmethod
    def from_redis(cls, raw: Mapping[Any, Any]) -> RefundRecord:
        h = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }
        return cls(
            id=h["id"],
            payment_id=h["payment_id"],
            status=RefundStatus(h["status"]),
            amount_minor=int(h["amount_minor"]),
            currency=h["currency"],
            idempotency_key=h["idempotency_key"],
            fingerprint=h["fingerprint"],
            created_at=h["created_at"],
            updated_at=h.get("updated_at", h["created_at"]),
            client=h.get("client") or None,
            stripe_refund=h.get("stripe_refund") or None,
            error=orjson.loads(h["error"]) if h.get("error") else None,
            error_status=int(h["error_status"]) if h.get("error_status") else None,
            attempts=int(h.get("attempts", 0)),
            reconcile_attempts=int(h.get("reconcile_attempts", 0)),
        )
