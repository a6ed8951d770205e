"""``POST /webhooks/stripe``: Stripe's events in, answered fast.

No client key (Stripe cannot send one; ``api.auth.OPEN_PATHS``): the ``Stripe-Signature``
header is verified over the raw body first, with STRIPE_WEBHOOK_SECRET's secrets (rotation) and
a 300 s tolerance, by the stripe library (``shared.stripe.webhook_events.verify_stripe_event``).
A bad signature (a header that is not ASCII too) is a 400 ``signature_invalid`` and nothing is
recorded. A signed body that is not a Stripe event of Stripe's shape is a 400 ``event_invalid``,
nothing recorded either: not JSON, nested past 1,024 levels, a lone surrogate escape, an event
id or a handled event's object id that is not letters, digits and underscores, or a type that
is not lower-case letters, digits, underscores and dots (``STRIPE_ID``, ``EVENT_TYPE``). A
verified event of a handled type is taken once per event id (kept 3 days, Stripe's retry
horizon) and its task enqueued in the same Redis step (the step the catch-up round of
``worker.event_catchup`` takes for an event it finds undelivered); the answer is 200 whether it
was new or a duplicate. Other types are answered 200 and counted, nothing enqueued. Redis down:
503, so that Stripe tries again. The task (``worker.stripe_events``) fetches the object again
from Stripe: the event's own data is never trusted.
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from api.deps import LifecycleStoreDep
from api.error_responses import JSON
from api.operation_docs import error_responses, read_by_hand
from api.request_helpers import read_json_body
from shared.errors import (
    InvalidRequest,
    PayloadTooLarge,
    StoreUnavailable,
    UnsupportedMediaType,
    WebhookSignatureInvalid,
)
from shared.settings.service_settings import Settings
from shared.stripe.outcomes import HANDLED_EVENTS, event_type_label
from shared.stripe.webhook_events import EVENT_TYPE, STRIPE_ID, verify_stripe_event

router = APIRouter()
log = structlog.get_logger(__name__)

WEBHOOK_PATH = "/webhooks/stripe"
SIGNATURE_TOLERANCE_SECONDS = 300


class WebhookReceived(BaseModel):
    received: bool = Field(description="Always true on a 200: the event was taken.")
    duplicate: bool = Field(description="The event id was seen before (nothing enqueued).")
    ignored: bool = Field(description="A type the service does not act on (counted only).")


@router.post(
    WEBHOOK_PATH,
    operation_id="receive_stripe_event",
    response_model=WebhookReceived,
    responses=error_responses(
        WebhookSignatureInvalid,
        InvalidRequest("The signed body is not a Stripe event.", code="event_invalid"),
        PayloadTooLarge,
        UnsupportedMediaType,
        StoreUnavailable,
    ),
    openapi_extra=read_by_hand(
        {
            "name": "Stripe-Signature",
            "in": "header",
            "required": True,
            "description": (
                "Stripe's signature of the raw body (t=<unix time>,v1=<HMAC-SHA256>), checked "
                "with STRIPE_WEBHOOK_SECRET's secrets and a 300 s tolerance. Missing, "
                "malformed, not ASCII, stale or wrong: 400 signature_invalid, nothing recorded."
            ),
            "schema": {"type": "string"},
        },
        body={
            "type": "object",
            "description": (
                "A Stripe Event object, as Stripe sends it. Signed but not an event of "
                "Stripe's shape (not JSON, nested past 1,024 levels, a lone surrogate escape, "
                f"an id or a handled type's object id other than {STRIPE_ID.pattern}, a type "
                f"other than {EVENT_TYPE.pattern}): 400 event_invalid, nothing recorded."
            ),
            "required": ["id", "type", "data"],
            "properties": {
                "id": {"type": "string", "pattern": f"^{STRIPE_ID.pattern}$"},
                "type": {"type": "string", "pattern": f"^{EVENT_TYPE.pattern}$"},
                "data": {"type": "object"},
            },
        },
    ),
)
async def stripe_webhook(request: Request, store: LifecycleStoreDep) -> Response:
    """A Stripe event: verified over the raw body (``Stripe-Signature``), taken once, its
    task enqueued. Needs no client key."""
    settings: Settings = request.app.state.settings
    body = await read_json_body(request, settings.max_body_bytes)
    event = verify_stripe_event(
        body,
        request.headers.get("stripe-signature"),
        settings.stripe_webhook_secrets,
        tolerance=SIGNATURE_TOLERANCE_SECONDS,
    )
    label = event_type_label(event.type)
    duplicate = ignored = False
    if event.type in HANDLED_EVENTS:
        duplicate = not await store.take_stripe_event(event, request_id=request.state.request_id)
    else:
        ignored = True
        await store.count_webhook(label, "ignored")
    log.info("stripe_event.received", event_id=event.id, event_type=event.type,
             duplicate=duplicate, ignored=ignored)  # fmt: skip
    answer = WebhookReceived(received=True, duplicate=duplicate, ignored=ignored)
    return Response(answer.model_dump_json(), status_code=200, media_type=JSON)
