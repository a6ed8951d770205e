"""Request and response shapes of the HTTP API: what the routes answer and what /docs shows.

Responses are built here (``payment_view``) and serialized by the models themselves, so the
document and the answers cannot drift apart; the two written directly for speed
(``payment_json``, ``customer_payments_json``) are compared with the models' bytes by a test.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NamedTuple

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    RootModel,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from shared.payments.deadlines import RULES as DEADLINE_RULE_TEXT
from shared.payments.metadata import (
    MAX_DESCRIPTION_LENGTH,
    MAX_KEY_LENGTH,
    MAX_KEYS,
    MAX_VALUE_LENGTH,
    METADATA_SCHEMA,
    RESERVED_KEYS,
)
from shared.payments.money import (
    AMOUNT_PATTERN,
    MAX_MINOR_UNITS,
    MINIMUM_CHARGE,
    SUPPORTED_CURRENCIES,
    format_minor,
)
from shared.payments.payment_records import MANUAL, PaymentRecord
from shared.payments.refund_records import RefundRecord
from shared.payments.states import CHARGED_STATUSES, Status
from shared.stripe.objects import ChargePage

CUSTOMER_ID_PATTERN = r"^cus_[A-Za-z0-9]{1,64}$"
PAYMENT_METHOD_PATTERN = r"^(pm|card|src)_[A-Za-z0-9_]{1,64}$"
PAYMENT_ID_PATTERN = r"^pay_[0-9a-f]{24}$"
CHARGE_ID_PATTERN = r"^(ch|py)_[A-Za-z0-9]{1,64}$"

METADATA_RULES = (
    f"Up to {MAX_KEYS} keys (Stripe's 50, less the service's own: "
    f"{', '.join(sorted(RESERVED_KEYS))}, which a client may not use), each of 1-{MAX_KEY_LENGTH} "
    f"characters without square brackets, each value a string of at most {MAX_VALUE_LENGTH} "
    "characters; a key with an empty value is not set."
)
DESCRIPTION_RULES = f"At most {MAX_DESCRIPTION_LENGTH} characters."
DEADLINE_RULES = DEADLINE_RULE_TEXT


class PaymentRequest(BaseModel):
    """``POST /payments``. Strict: a JSON number, bool, null or list where a string belongs, or
    a field the service does not know, is refused (as Stripe refuses unknown parameters)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    account_id: Annotated[str, StringConstraints(pattern=CUSTOMER_ID_PATTERN)] = Field(
        description="The Stripe customer to charge (cus_...).", examples=["cus_Nffrfeuf3qpRJC"]
    )
    amount: Annotated[str, StringConstraints(pattern=AMOUNT_PATTERN, max_length=32)] = Field(
        description=(
            'Decimal string in major units, e.g. "42.99"; never a JSON number. No more decimals '
            "than the currency has; at least Stripe's minimum for the currency "
            f"({MINIMUM_CHARGE['usd']} usd, {MINIMUM_CHARGE['jpy']} jpy); at "
            f"most {MAX_MINOR_UNITS:,} minor units ({MAX_MINOR_UNITS / 100:,.2f} usd, "
            f"{MAX_MINOR_UNITS:,} jpy)."
        ),
        examples=["42.99"],
    )
    currency: str = Field(
        default="usd",
        description="One of the listed ISO 4217 codes, lower case.",
        json_schema_extra={"enum": list[JsonValue](sorted(SUPPORTED_CURRENCIES))},
    )
    payment_method: Annotated[str, StringConstraints(pattern=PAYMENT_METHOD_PATTERN)] | None = (
        Field(default=None, description="Defaults to the customer's default payment method.")
    )
    callback_url: Annotated[str, StringConstraints(max_length=2048)] | None = Field(
        default=None,
        description=(
            "Where to POST this payment's events (signed, Standard Webhooks): https (http "
            "outside production), a host in CALLBACK_ALLOWED_HOSTS when set, only addresses "
            "on the public internet, no space or control character. Default: the client's "
            "endpoint in CALLBACK_ENDPOINTS. Not part of the request's identity: a replay "
            "keeps the first."
        ),
        examples=["https://shop.example.com/hooks/payments"],
    )
    description: Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION_LENGTH)] | None = (
        Field(
            default=None,
            description=(
                f"{DESCRIPTION_RULES} Sent to Stripe as the PaymentIntent's description (and so "
                "its charge's), shown in every answer. Part of the request's identity."
            ),
            examples=["Order 1001"],
        )
    )
    # Checked by hand (shared.payments.metadata.checked_metadata) for errors that name the key.
    metadata: Annotated[dict[str, Any], WithJsonSchema(METADATA_SCHEMA)] | None = Field(
        default=None,
        description=(
            f"Your own key-value pairs, as on Stripe's objects. {METADATA_RULES} Sent to Stripe "
            "in the PaymentIntent's metadata (and so its charge's) beside the service's own keys, "
            "shown in every answer, list item and callback. Part of the request's identity."
        ),
        examples=[{"order_id": "1001", "customer_ref": "A-17"}],
    )

    # Checked by hand (shared.payments.deadlines.deadline_of) for errors that name the field.
    expires_at: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None,
        description=(
            "A deadline (RFC 3339 with its offset): if the charge has not been sent to Stripe "
            "by then, the payment ends `expired` and is never charged; a charge already sent "
            f"is settled by Stripe's answer. {DEADLINE_RULES} Part of the request's identity."
        ),
        examples=["2026-01-01T12:00:00Z"],
    )
    expires_in: int | None = Field(
        default=None,
        description=(
            "The deadline in seconds from now, instead of expires_at. Part of the request's "
            "identity as given: a retry with the same expires_in is the same request, and "
            "keeps the first request's deadline."
        ),
        examples=[600],
    )
    capture_method: Literal["automatic", "manual"] = Field(
        default="automatic",
        description=(
            "`manual`: the charge only authorizes the amount (the payment ends "
            "`requires_capture`); capture it with POST /payments/{id}/capture, or release it "
            "with POST /payments/{id}/cancel, within 7 days (after which Stripe releases it and "
            "the payment becomes `canceled`). Part of the request's identity."
        ),
    )

    @field_validator("currency")
    @classmethod
    def _supported_currency(cls, value: str) -> str:
        if value not in SUPPORTED_CURRENCIES:
            raise ValueError("unsupported currency")
        return value


class RefundRequest(BaseModel):
    """``POST /payments/{id}/refunds``. Strict, like PaymentRequest."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    amount: Annotated[str, StringConstraints(pattern=AMOUNT_PATTERN, max_length=32)] | None = Field(
        default=None,
        description=(
            'Decimal string in major units, e.g. "10.00", in the payment\'s currency; '
            "absent: all that is left. The payment's refunds never add up to more than it "
            "charged (409 refund_exceeds_charge)."
        ),
        examples=["10.00"],
    )


class CancelRequest(BaseModel):
    """``POST /payments/{id}/cancel`` takes no field: its body, if any, is ``{}``. A field
    (Stripe's ``cancellation_reason``, say) is a 400 ``parameter_unknown`` rather than a
    request silently taken for less than it asked."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CaptureRequest(BaseModel):
    """``POST /payments/{id}/capture``. Strict, like PaymentRequest."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    amount: Annotated[str, StringConstraints(pattern=AMOUNT_PATTERN, max_length=32)] | None = Field(
        default=None,
        description=(
            'Decimal string in major units, e.g. "30.00", in the payment\'s currency, at most '
            "the amount authorized (400 amount_too_large); absent: all of it. Stripe releases "
            "the rest."
        ),
        examples=["30.00"],
    )


class ErrorBody(BaseModel):
    """Stripe-style error object; more fields may follow, as on Stripe's errors."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["invalid_request_error"])
    code: str = Field(examples=["amount_invalid"])
    message: str
    param: str | None = None
    decline_code: str | None = None
    payment_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Refund(BaseModel):
    id: str = Field(examples=["ref_4c1e0b9d2f7a4e3c8b6a5d10"])
    object: Literal["refund"] = "refund"
    payment_id: str
    status: Literal["pending", "succeeded", "failed", "unknown"] = Field(
        description=(
            "pending until Stripe answers; unknown when Stripe could not be asked whether it "
            "refunded (the service keeps asking; the amount stays held, do not refund again)."
        )
    )
    amount: str = Field(examples=["10.00"])
    currency: str
    idempotency_key: str
    created_at: str
    updated_at: str
    stripe_refund: str | None = Field(description="Stripe Refund id, once known.")
    error: ErrorBody | None = Field(default=None, description="Present once failed: why.")


class QueueStanding(BaseModel):
    """Where a queued payment stands in its client's queue: an estimate, not a promise."""

    ahead: int = Field(
        description=(
            "How many of this client's charges wait before this one in its queue (other "
            "clients' charges are taken in turns beside them, by weight)."
        ),
        examples=[120],
    )
    estimated_charge_at: str | None = Field(
        description=(
            "When its charge is expected to be sent to Stripe (ISO 8601, UTC), from how fast "
            "this client's queue has been drained lately (else the Stripe budget, "
            "STRIPE_MAX_RPS); null when there is no rate to go by."
        ),
        examples=["2026-01-01T12:00:30.000Z"],
    )
    estimate: Literal[True] = Field(
        description="Always true: both figures are estimates, and may change either way."
    )


class QueueFigures(NamedTuple):
    """Where a queued payment stands, as the service works it out (api.queue_position): the
    figures of the answer's QueueStanding, which is made of them only where an answer goes
    through the models (each accept's answer is written directly: payment_json)."""

    ahead: int
    estimated_charge_at: str | None


class Capture(BaseModel):
    """The capture or void asked of an authorized payment."""

    action: Literal["capture", "void"]
    status: Literal["pending", "succeeded", "failed", "unknown"] = Field(
        description=(
            "pending while queued or at Stripe (the payment stays requires_capture); unknown "
            "when Stripe could not be asked whether it happened (the service keeps asking; no "
            "other capture or void is taken meanwhile); failed: the error says why (a new "
            "capture or void may be asked while the payment is requires_capture)."
        )
    )
    amount: str | None = Field(
        default=None, description="The amount asked to capture; absent: all of it (or a void)."
    )
    error: ErrorBody | None = Field(default=None, description="Present once failed: why.")


class Payment(BaseModel):
    id: str = Field(examples=["pay_3f9c2a7be1d04c55a9e1f0d2"])
    object: Literal["payment"] = "payment"
    status: Status
    account_id: str
    amount: str = Field(examples=["42.99"])
    currency: str
    payment_method: str | None
    idempotency_key: str
    created_at: str
    updated_at: str
    payment_intent: str | None = Field(description="Stripe PaymentIntent id, once known.")
    charge: str | None = Field(description="Stripe Charge id, once known.")
    confirmation: str | None = Field(description="The PaymentIntent id once succeeded.")
    description: str | None = Field(
        description="The request's description, as sent to Stripe.", examples=["Order 1001"]
    )
    metadata: dict[str, str] = Field(
        description=(
            "The request's metadata, as sent to Stripe (without the service's own keys); {} "
            "when none."
        ),
        examples=[{"order_id": "1001"}],
    )
    next_action: str | None = Field(
        default=None, description="Present while the customer must act (requires_action)."
    )
    error: ErrorBody | None = Field(
        default=None, description="Present once failed or requires_action: why."
    )
    client_secret: str | None = Field(
        default=None,
        description=(
            "The PaymentIntent's client_secret while requires_action, shown only to the client "
            "that made the payment: hand it to Stripe.js (confirmCardPayment / handleNextAction) "
            "so the customer completes 3-D Secure; the payment then moves to succeeded or failed."
        ),
    )
    amount_refunded: str = Field(
        default="0.00",
        description="Refunded so far (ours and any made in Stripe's dashboard), major units.",
        examples=["10.00"],
    )
    refunds: list[Refund] = Field(
        default_factory=list, description="The refunds asked through this service, oldest first."
    )
    expires_at: str | None = Field(
        default=None,
        description=(
            "The payment's deadline (ISO 8601, UTC), present when the request gave one: not "
            "sent to Stripe by then, it ends `expired`, never charged."
        ),
        examples=["2026-01-01T12:00:00.000Z"],
    )
    queue: QueueStanding | None = Field(
        default=None,
        description=(
            "Present while `queued`, in the accept's answer and in GET /payments/{id}: where "
            "the payment stands in its client's queue (an estimate)."
        ),
    )
    capture_method: Literal["automatic", "manual"] = Field(
        default="automatic", description="Present when `manual` (authorize now, capture later)."
    )
    capture: Capture | None = Field(
        default=None, description="Present once a capture or void was asked: where it stands."
    )
    amount_captured: str | None = Field(
        default=None,
        description="Once an authorization is captured: what was taken (refunds come out of it).",
        examples=["30.00"],
    )
    captured_at: str | None = Field(default=None, description="When the capture was recorded.")
    canceled_at: str | None = Field(
        default=None, description="When the authorization's release was recorded."
    )
    cancellation_reason: str | None = Field(
        default=None,
        description=(
            "Why the authorization was released: `automatic` (Stripe, 7 days after it was "
            "authorized), else Stripe's cancellation_reason, or `requested` (a void)."
        ),
    )


MAX_BATCH_ITEMS = 1_000


class PaymentBatchItem(PaymentRequest):
    """One payment of ``POST /payments/batch``: what ``POST /payments`` takes, and its key."""

    idempotency_key: Annotated[
        str, StringConstraints(min_length=1, max_length=255, pattern=r"^[ -~]+$")
    ] = Field(
        description=(
            "Required: this payment's idempotency key, as POST /payments' Idempotency-Key "
            "header (1-255 printable ASCII characters, scoped to your API key, the same rules): "
            "the same key with the same payment answers the same payment, never a second "
            "charge; with another payment, a 422 for this item."
        ),
        examples=["order-1001"],
    )


class PaymentBatchRequest(BaseModel):
    """``POST /payments/batch``: up to 1,000 payments, each accepted or refused on its own."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    payments: list[PaymentBatchItem] = Field(
        min_length=1,
        max_length=MAX_BATCH_ITEMS,
        description=(
            f"1 to {MAX_BATCH_ITEMS:,} payments, each what POST /payments takes plus its "
            "idempotency_key; answered in this order."
        ),
    )


class PaymentBatchResult(BaseModel):
    """One item's answer: what POST /payments would have answered it, status and body."""

    status: int = Field(
        description=(
            "The status POST /payments would have answered this payment with: 202 accepted "
            "(or a replay still in progress), 200 a replay of a succeeded payment, the error's "
            "status otherwise (400 invalid, 402 a replay of a declined payment, 422 the key "
            "used with another payment, 429 over the client's rate, 503 over the backlog...)."
        ),
        examples=[202],
    )
    payment: Payment | None = Field(default=None, description="Present on 200 and 202.")
    error: ErrorBody | None = Field(default=None, description="Present on an error status.")
    replayed: bool | None = Field(
        default=None,
        description=(
            "true when the key already had this payment (POST /payments' "
            "`Idempotent-Replayed: true`); absent otherwise."
        ),
    )


class PaymentBatchResponse(BaseModel):
    results: list[PaymentBatchResult] = Field(
        description="One per item of `payments`, in the same order."
    )


class PaymentBatchAnswer(RootModel[PaymentBatchResponse | ErrorResponse]):
    """A batch's answer with an error status: ``results`` when every item got that status,
    ``error`` when the batch itself was refused (no item was looked at)."""


class CallbackEvent(BaseModel):
    """What a callback POSTs (Standard Webhooks): verify ``webhook-signature`` over
    ``webhook-id.webhook-timestamp.body`` with your secret before trusting it."""

    id: str = Field(
        description="The event's id, also in webhook-id: the same on every retry (dedupe).",
        examples=["evt_6b1f0c2d9e8a7b4c3d2e1f0a"],
    )
    type: Literal[
        "payment.succeeded",
        "payment.failed",
        "payment.requires_action",
        "payment.refunded",
        "payment.disputed",
        "payment.expired",
        "payment.requires_capture",
        "payment.canceled",
        "refund.succeeded",
        "refund.failed",
    ]
    timestamp: str = Field(description="When it happened (ISO 8601, UTC).")
    data: dict[str, Any] = Field(
        description=(
            "payment.*: the payment (id, status, amount, currency, amount_refunded, "
            "payment_intent, charge, description, metadata, error, next_action; for an "
            "authorization, capture_method, amount_captured and cancellation_reason once known); "
            "refund.*: the "
            "refund (id, payment_id, status, amount, currency, stripe_refund, error). As it "
            "stands when sent."
        )
    )


class CustomerCharge(BaseModel):
    id: str
    amount: str = Field(examples=["42.99"])
    currency: str
    status: str
    created: int
    payment_intent: str | None
    description: str | None = Field(
        description=(
            "The charge's description (else its PaymentIntent's): for a payment made here, its "
            "request's description."
        )
    )
    payment_id: str | None = Field(description="This service's payment id, when it made it.")
    failure_code: str | None
    refunded: bool
    amount_refunded: str = Field(
        default="0.00", description="Refunded so far, from Stripe (dashboard refunds too)."
    )
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "The charge's metadata (else its PaymentIntent's) without the service's own keys: "
            "for a payment made here, its request's metadata."
        ),
    )


class CustomerPayments(BaseModel):
    object: Literal["list"] = "list"
    data: list[CustomerCharge]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as starting_after for the next page.")


class PaymentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Payment] = Field(description="The page's payments, newest first.")
    has_more: bool
    next_cursor: str | None = Field(description="Pass as starting_after for the next page.")
    url: Literal["/payments"] = "/payments"


class Health(BaseModel):
    status: Literal["ok"] = Field(description="The process is alive.")


class Readiness(BaseModel):
    status: Literal["ready"]
    redis: Literal["ok"] = Field(description="Redis answered a PING.")


def refund_view(refund: RefundRecord) -> Refund:
    optional: dict[str, object] = {}
    if refund.error is not None:
        optional["error"] = ErrorBody.model_validate(refund.error)
    return Refund(
        id=refund.id,
        object="refund",
        payment_id=refund.payment_id,
        status=refund.status.value,
        amount=format_minor(refund.amount_minor, refund.currency),
        currency=refund.currency,
        idempotency_key=refund.idempotency_key,
        created_at=refund.created_at,
        updated_at=refund.updated_at,
        stripe_refund=refund.stripe_refund,
        **optional,
    )


def shows_client_secret(record: PaymentRecord, viewer: str | None) -> bool:
    """The client_secret is shown only while the customer must act, and only to the client
    that made the payment."""
    return bool(
        record.client_secret
        and record.status is Status.REQUIRES_ACTION
        and viewer is not None
        and viewer == record.client
    )


def payment_view(
    record: PaymentRecord,
    *,
    viewer: str | None = None,
    refunds: list[RefundRecord] | None = None,
    queue: QueueFigures | None = None,
) -> Payment:
    """What a client sees of a record: amounts as decimal strings in major units, no internals.

    ``next_action`` and ``error`` are set only when the record has them, so that answers
    serialized with ``exclude_unset`` leave them out rather than send nulls; ``client_secret``
    only while the customer must act, and only for ``viewer`` being the client that paid.
    """
    optional: dict[str, object] = {}
    if record.next_action:
        optional["next_action"] = record.next_action
    if record.error is not None:
        optional["error"] = ErrorBody.model_validate(record.error)
    if shows_client_secret(record, viewer):
        optional["client_secret"] = record.client_secret
    optional["amount_refunded"] = format_minor(record.amount_refunded_minor, record.currency)
    optional["refunds"] = [refund_view(r) for r in refunds or ()]
    if record.expires_at:
        optional["expires_at"] = record.expires_at
    if queue is not None:
        optional["queue"] = QueueStanding(
            ahead=queue.ahead, estimated_charge_at=queue.estimated_charge_at, estimate=True
        )
    if record.capture_method == MANUAL:
        optional.update(authorization_view(record))
    return Payment(
        id=record.id,
        object="payment",
        status=record.status,
        account_id=record.account_id,
        amount=format_minor(record.amount_minor, record.currency),
        currency=record.currency,
        payment_method=record.payment_method,
        idempotency_key=record.idempotency_key,
        created_at=record.created_at,
        updated_at=record.updated_at,
        payment_intent=record.payment_intent,
        charge=record.charge,
        confirmation=record.payment_intent if record.status in CHARGED_STATUSES else None,
        description=record.description,
        metadata=record.metadata,
        **optional,
    )


def authorization_view(record: PaymentRecord) -> dict[str, object]:
    """What an authorized payment shows besides a charge's fields: set only when known."""
    shown: dict[str, object] = {"capture_method": MANUAL}
    if record.capture_action is not None and record.capture_status is not None:
        capture: dict[str, object] = {}
        if record.capture_amount_minor is not None:
            capture["amount"] = format_minor(record.capture_amount_minor, record.currency)
        if record.capture_error is not None:
            capture["error"] = ErrorBody.model_validate(record.capture_error)
        shown["capture"] = Capture(
            action=record.capture_action,
            status=record.capture_status.value,
            **capture,
        )
    if record.amount_captured_minor is not None:
        shown["amount_captured"] = format_minor(record.amount_captured_minor, record.currency)
    for name in ("captured_at", "canceled_at", "cancellation_reason"):
        if getattr(record, name):
            shown[name] = getattr(record, name)
    return shown


def payment_json(
    record: PaymentRecord, *, viewer: str | None = None, queue: QueueFigures | None = None
) -> bytes:
    """``dump(payment_view(record, viewer=viewer))``, written directly: the same bytes
    (a test compares them over every status and optional field) without building and
    validating the pydantic model, a measurable share of an accept's CPU. A record with an
    error object goes through the model, which shapes the error."""
    if record.error is not None or record.capture_method == MANUAL:
        return dump(payment_view(record, viewer=viewer, queue=queue)).encode()
    status, currency = record.status, record.currency
    body: dict[str, object] = {
        "id": record.id,
        "object": "payment",
        "status": status,  # orjson writes an enum member as its value
        "account_id": record.account_id,
        "amount": format_minor(record.amount_minor, currency),
        "currency": currency,
        "payment_method": record.payment_method,
        "idempotency_key": record.idempotency_key,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "payment_intent": record.payment_intent,
        "charge": record.charge,
        "confirmation": record.payment_intent if status in CHARGED_STATUSES else None,
        "description": record.description,
        "metadata": record.metadata,
    }
    if record.next_action:
        body["next_action"] = record.next_action
    if record.client_secret and shows_client_secret(record, viewer):
        body["client_secret"] = record.client_secret
    body["amount_refunded"] = format_minor(record.amount_refunded_minor, currency)
    body["refunds"] = []
    if record.expires_at:
        body["expires_at"] = record.expires_at
    if queue is not None:
        body["queue"] = {"ahead": queue.ahead, "estimated_charge_at": queue.estimated_charge_at,
                         "estimate": True}  # fmt: skip
    return orjson.dumps(body)


def customer_payments_json(page: ChargePage) -> bytes:
    """One page of the customer's charges as ``CustomerPayments`` dumps it: the same bytes (a test
    compares them) without validating every charge into a model again, a share of each list
    call's CPU on the event loop the accepts share. The page's ChargeSummary dataclasses have
    CustomerCharge's fields, in its order, with its types (the gateway builds them)."""
    return orjson.dumps(
        {
            "object": "list",
            "data": page.data,
            "has_more": page.has_more,
            "next_cursor": page.next_cursor,
        }
    )


def dump(model: BaseModel) -> str:
    """A response body: the model as JSON, leaving out what the view did not set."""
    return model.model_dump_json(exclude_unset=True)
