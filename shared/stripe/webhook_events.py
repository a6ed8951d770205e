"""Stripe's webhook events in: the signature checked by the stripe library, then only which
object the event is about (its data is never trusted)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import stripe

from shared.errors import InvalidRequest, WebhookSignatureInvalid
from shared.stripe.objects import id_of


@dataclass(frozen=True, slots=True)
class StripeEventRef:
    """A verified webhook event: which object it is about (its data is never trusted)."""

    id: str
    type: str
    object_type: str
    object_id: str
    charge_id: str | None  # a dispute's charge


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
        obj = event["data"]["object"]
        return StripeEventRef(
            id=str(event["id"]),
            type=str(event["type"]),
            object_type=str(obj.get("object", "")),
            object_id=str(obj["id"]),
            charge_id=id_of(obj.get("charge")) if obj.get("object") == "dispute" else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InvalidRequest(
            "The signed body is not a Stripe event.", code="event_invalid"
        ) from None
