"""Stripe's events in, by webhook or listed from ``GET /v1/events``: the signature of a webhook
checked by the stripe library, then only which object the event is about (its data is never
trusted)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import stripe

from shared.errors import InvalidRequest, WebhookSignatureInvalid
from shared.stripe.objects import id_of
from shared.stripe.outcomes import HANDLED_EVENTS

# Stripe's ids: a prefix and an underscore, then letters and digits (evt_…, pi_…, ch_…, dp_…).
STRIPE_ID = re.compile(r"[A-Za-z0-9_]{1,255}")
# Stripe's event types: lower-case names joined by dots (payment_intent.succeeded).
EVENT_TYPE = re.compile(r"[a-z0-9_.]{1,100}")


@dataclass(frozen=True, slots=True)
class StripeEventRef:
    """An event from Stripe: which object it is about (its data is never trusted)."""

    id: str
    type: str
    object_type: str
    object_id: str
    charge_id: str | None  # a dispute's charge


@dataclass(frozen=True, slots=True)
class EventPage:
    """A page of ``GET /v1/events``, newest first; ``last_id`` is the next page's cursor."""

    events: list[StripeEventRef]
    has_more: bool
    last_id: str | None


def event_ref(event: Mapping[str, Any]) -> StripeEventRef:
    """What an Event object names; InvalidRequest when it is not one. The object of a type the
    service does not handle may have no id (``balance.available``'s balance): its id is then
    empty, as nothing reads it."""
    try:
        obj = event["data"]["object"]
        event_type = str(event["type"])
        object_id = obj["id"] if event_type in HANDLED_EVENTS else obj.get("id", "")
        return StripeEventRef(
            id=str(event["id"]),
            type=event_type,
            object_type=str(obj.get("object", "")),
            object_id=str(object_id),
            charge_id=id_of(obj.get("charge")) if obj.get("object") == "dispute" else None,
        )
    except (KeyError, TypeError, AttributeError):
        raise InvalidRequest("The body is not a Stripe event.", code="event_invalid") from None


def _matches(pattern: re.Pattern[str], value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _stripe_shaped(event: Mapping[str, Any], ref: StripeEventRef) -> bool:
    """Whether what the service keeps of a webhook's event has Stripe's own shape: the event's
    id (a Redis key, the task's id) and type (logged, a metric label) always; for a handled type
    also the object's id and a dispute's charge, which the task puts in a Stripe URL path. An
    ignored event's object is not read: Stripe lets an account name some objects itself
    (coupons, products), and refusing those would fail deliveries the service has no use for."""
    if not (_matches(STRIPE_ID, event["id"]) and _matches(EVENT_TYPE, event["type"])):
        return False
    if ref.type not in HANDLED_EVENTS:
        return True
    return _matches(STRIPE_ID, event["data"]["object"]["id"]) and (
        ref.charge_id is None or _matches(STRIPE_ID, ref.charge_id)
    )


def verify_stripe_event(
    payload: bytes, signature: str | None, secrets: tuple[str, ...], *, tolerance: int = 300
) -> StripeEventRef:
    """The event in ``payload`` if ``signature`` (Stripe-Signature) verifies it with one of
    ``secrets`` within ``tolerance`` seconds (the stripe library's own check); else
    WebhookSignatureInvalid. A verified body that is not a Stripe event of Stripe's shape (not
    JSON, nested past orjson's depth limit, a lone surrogate, an id or type Stripe would not
    write) is InvalidRequest ``event_invalid``: refused before anything is counted or queued."""
    if not secrets:
        raise WebhookSignatureInvalid("No STRIPE_WEBHOOK_SECRET is configured: nothing verifies.")
    if not signature:
        raise WebhookSignatureInvalid("The Stripe-Signature header is missing.")
    if not signature.isascii():
        # Stripe's header is ASCII; the library compares str digests, which raises on others.
        raise WebhookSignatureInvalid("The Stripe-Signature header is not ASCII.")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookSignatureInvalid("The body is not UTF-8.") from None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, signature, secret, tolerance)
            break
        except (stripe.SignatureVerificationError, TypeError, ValueError):
            # TypeError, ValueError: a header the library's own parsing does not foresee.
            continue
    else:
        raise WebhookSignatureInvalid(
            "The Stripe-Signature header is malformed, stale or made with another secret."
        )
    invalid = InvalidRequest("The signed body is not a Stripe event.", code="event_invalid")
    try:
        # orjson, not json: it refuses nesting past 1,024 levels (json recurses until
        # RecursionError) and lone surrogates (which no log line or task message can encode).
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise invalid from None
    if not isinstance(event, dict):
        raise invalid
    try:
        ref = event_ref(event)
    except InvalidRequest:
        raise invalid from None
    if not _stripe_shaped(event, ref):
        raise invalid
    return ref
