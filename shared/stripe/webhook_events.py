"""Stripe's events in, by webhook or listed from ``GET /v1/events``: the signature of a webhook
checked by the stripe library, then only which object the event is about (its data is never
trusted)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import stripe

from shared.errors import InvalidRequest, WebhookSignatureInvalid
from shared.stripe.objects import id_of


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
    """What an Event object names; InvalidRequest when it is not one."""
    try:
        obj = event["data"]["object"]
        return StripeEventRef(
            id=str(event["id"]),
            type=str(event["type"]),
            object_type=str(obj.get("object", "")),
            object_id=str(obj["id"]),
            charge_id=id_of(obj.get("charge")) if obj.get("object") == "dispute" else None,
        )
    except (KeyError, TypeError, AttributeError):
        raise InvalidRequest("The body is not a Stripe event.", code="event_invalid") from None


def verify_stripe_event(
    payload: bytes, signature: str | None, secrets: tuple[str, ...], *, tolerance: int = 300
) -> StripeEventRef:
    """The event in ``payload`` if ``signature`` (Stripe-Signature) verifies it with one of
    ``secrets`` within ``tolerance`` seconds (the stripe library's own check); else
    WebhookSignatureInvalid."""
    if not secrets:
        raise WebhookSignatureInvalid("No STRIPE_WEBHOOK_SECRET is configured: nothing verifies.")
    if not signature:
        raise WebhookSignatureInvalid("The Stripe-Signature header is missing.")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookSignatureInvalid("The body is not UTF-8.") from None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, signature, secret, tolerance)
            break
        except stripe.SignatureVerificationError:
            continue
    else:
        raise WebhookSignatureInvalid(
            "The Stripe-Signature header is malformed, stale or made with another secret."
        )
    try:
        event = json.loads(text)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise InvalidRequest("The signed body is not a Stripe event.", code="event_invalid")
    try:
        return event_ref(event)
    except InvalidRequest:
        raise InvalidRequest(
            "The signed body is not a Stripe event.", code="event_invalid"
        ) from None
