"""Stripe's JSON objects as the service's plain data: a charge for a list, a charge's state
after the fact, a PaymentIntent's outcome, a refund's outcome. No call is made here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.payments.metadata import CLIENT_KEY, PAYMENT_ID_KEY, client_metadata
from shared.payments.money import format_minor
from shared.stripe.outcomes import ChargeOutcome, RefundOutcome


@dataclass(frozen=True, slots=True)
class ChargeSummary:
    id: str
    amount: str
    currency: str
    status: str
    created: int
    payment_intent: str | None
    description: str | None
    payment_id: str | None
    failure_code: str | None
    refunded: bool
    amount_refunded: str = "0"
    metadata: dict[str, str] = field(default_factory=dict)


# The metadata key naming the client that made a payment, on its PaymentIntent (beside our
# payment id) and so on its charge: Stripe copies a PaymentIntent's metadata to its charge.
CLIENT_METADATA = CLIENT_KEY


@dataclass(frozen=True, slots=True)
class ChargePage:
    data: list[ChargeSummary]
    has_more: bool
    # The client each charge's metadata names (None: none), in ``data``'s order; not shown.
    owners: tuple[str | None, ...] = ()
    # Where the next page starts when that is not the last charge shown: a page filtered to
    # one client's charges may have read past charges it does not show.
    cursor: str | None = None

    @property
    def next_cursor(self) -> str | None:
        if not self.has_more:
            return None
        return self.cursor or (self.data[-1].id if self.data else None)


def id_of(value: Any) -> str | None:
    """Stripe sends either an id or the expanded object (the emulator always expands)."""
    if value is None or isinstance(value, str):
        return value
    return str(value["id"])


def field_of(obj: Any, name: str) -> Any:
    """A field of a JSON object that may be absent or null."""
    return obj.get(name) if isinstance(obj, dict) else None


def refund_outcome(refund: dict[str, Any]) -> RefundOutcome:
    return RefundOutcome(
        id=str(refund["id"]),
        status=str(refund.get("status") or "pending"),
        amount_minor=int(refund["amount"]),
        refund_id=field_of(refund.get("metadata"), "refund_id"),
        failure_reason=refund.get("failure_reason"),
    )


@dataclass(frozen=True, slots=True)
class ChargeState:
    """What Stripe says of a charge after the fact."""

    id: str
    payment_intent: str | None
    payment_id: str | None
    amount_minor: int
    amount_refunded_minor: int  # of what was captured (the part a partial capture released is not)
    disputed: bool


def charge_state(charge: dict[str, Any]) -> ChargeState:
    intent = charge.get("payment_intent")
    payment_id = field_of(charge.get("metadata"), "payment_id") or (
        field_of(field_of(intent, "metadata"), "payment_id") if isinstance(intent, dict) else None
    )
    amount = int(charge["amount"])
    refunded = int(charge.get("amount_refunded") or 0)
    captured = charge.get("amount_captured")
    if charge.get("captured") is False:
        # An authorization released uncaptured: Stripe marks it refunded, yet nothing was taken.
        refunded = 0
    elif charge.get("captured") and captured is not None and 0 < int(captured) < amount:
        # A partial capture: Stripe counts the part released as refunded.
        refunded = max(0, refunded - (amount - int(captured)))
    return ChargeState(
        id=str(charge["id"]),
        payment_intent=id_of(intent),
        payment_id=payment_id,
        amount_minor=amount,
        amount_refunded_minor=refunded,
        disputed=bool(charge.get("disputed")),
    )


def intent_outcome(intent: dict[str, Any]) -> ChargeOutcome:
    next_action = intent.get("next_action")
    return ChargeOutcome(
        status=str(intent["status"]),
        payment_intent_id=str(intent["id"]),
        charge_id=id_of(intent.get("latest_charge")),
        next_action=str(field_of(next_action, "type")) if next_action else None,
        payment_id=field_of(intent.get("metadata"), "payment_id"),
        client_secret=intent.get("client_secret") if next_action else None,
        capture_method=intent.get("capture_method"),
        amount_received=intent.get("amount_received"),
        cancellation_reason=intent.get("cancellation_reason"),
    )


def charge_client(charge: dict[str, Any]) -> str | None:
    """The client that made a charge, as its metadata (else its PaymentIntent's) names it."""
    intent = field_of(charge, "payment_intent")
    client = field_of(field_of(charge, "metadata"), CLIENT_METADATA) or field_of(
        field_of(intent, "metadata"), CLIENT_METADATA
    )
    return str(client) if client else None


def charge_summary(charge: dict[str, Any]) -> ChargeSummary:
    """A charge of the customer's list. Its metadata and description are the charge's, else (a
    charge that has none) its expanded PaymentIntent's: Stripe copies them from one to the other
    when the charge is made."""
    intent = field_of(charge, "payment_intent")
    intent_metadata = None if isinstance(intent, str) else field_of(intent, "metadata")
    metadata = field_of(charge, "metadata") or intent_metadata
    payment_id = field_of(field_of(charge, "metadata"), PAYMENT_ID_KEY) or field_of(
        intent_metadata, PAYMENT_ID_KEY
    )
    description = field_of(charge, "description") or (
        None if isinstance(intent, str) else field_of(intent, "description")
    )
    return ChargeSummary(
        id=str(charge["id"]),
        amount=format_minor(int(charge["amount"]), str(charge["currency"])),
        currency=str(charge["currency"]),
        status=str(charge["status"]),
        created=int(charge["created"]),
        payment_intent=id_of(intent),
        description=description,
        payment_id=payment_id,
        failure_code=field_of(charge, "failure_code"),
        refunded=bool(field_of(charge, "refunded")),
        amount_refunded=format_minor(
            int(field_of(charge, "amount_refunded") or 0), str(charge["currency"])
        ),
        metadata=client_metadata(metadata),
    )
