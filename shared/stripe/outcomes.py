"""Where Stripe's answers become the service's outcomes and HTTP statuses: the one map.

Three tables, read top to bottom:
- ``STRIPE_FAILURES``: a failed Stripe call (as the gateway describes it, ``StripeFailure``) to
  either a final service error (its class in ``shared.errors`` carries the HTTP status) or a
  ``TransientStripeError`` (try again with the same idempotency key);
- ``INTENT_STATUSES``: a PaymentIntent's status to the payment's status and error, which
  ``settle`` completes with the record's fields: what every path that learns of a
  PaymentIntent (the charge attempt, the reconciler, webhooks, the re-check) writes;
- what a worker tells the client when Stripe cannot be reached (``not_charged``,
  ``outcome_unknown``) and what a reader is told (``for_reader``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import orjson

from shared.errors import (
    CardDeclined,
    CustomerNotFound,
    InvalidRequest,
    OutcomeUnknown,
    PaymentServiceError,
    RateLimited,
    StripeUnavailable,
    UpstreamError,
)
from shared.payments.states import Status

FailureKind = Literal[
    "connection",  # no answer: the request may or may not have reached Stripe
    "rate_limit",
    "card",
    "authentication",  # our key was refused
    "idempotency",  # the key was reused with other parameters, or is in flight (409)
    "api",  # Stripe's own error (5xx)
    "invalid_request",
]


@dataclass(frozen=True, slots=True)
class StripeFailure:
    """A failed Stripe call, described without the SDK's types (see shared.stripe.sdk_errors)."""

    kind: FailureKind
    http_status: int = 0
    code: str | None = None
    message: str | None = None
    param: str | None = None
    decline_code: str | None = None
    should_retry: bool | None = None  # Stripe-Should-Retry, when sent
    retry_after: float | None = None
    # Stripe-Rate-Limited-Reason on a 429: global-rate, endpoint-rate, global-concurrency,
    # endpoint-concurrency, resource-specific (none on a lock_timeout).
    rate_limited_reason: str | None = None


class TransientStripeError(Exception):
    """Stripe could not answer now; the same request with the same key may succeed later.
    Whether an earlier write landed is unknown (the next attempt reconciles first), except
    after a 429 (``rate_limited``, ``lock_timeout``): Stripe did not process the request."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        http_status: int = 0,
        limited_globally: bool = False,
        lock_timeout: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.http_status = http_status
        self.limited_globally = limited_globally  # the account's limit, not the endpoint's
        # A 429 with the code lock_timeout: another request (or a Stripe process) held the
        # object, e.g. the customer. Not one of the limiters: it says nothing of the rate.
        self.lock_timeout = lock_timeout

    @property
    def rate_limited(self) -> bool:
        """One of Stripe's limiters (the account's or an endpoint's rate or concurrency, a
        resource's own limit) refused the request unprocessed: the budget slows for it."""
        return self.http_status == 429 and not self.lock_timeout


@dataclass(frozen=True, slots=True)
class ChargeOutcome:
    """What Stripe says of a PaymentIntent."""

    status: str  # succeeded, requires_action, processing, requires_payment_method, ...
    payment_intent_id: str
    charge_id: str | None
    next_action: str | None = None
    # Our payment id, from the PaymentIntent's metadata (set on every one the service makes).
    payment_id: str | None = None
    # For the customer's front end while it must act (3-D Secure); kept out of logs and reprs.
    client_secret: str | None = field(default=None, repr=False)
    # Authorize now, capture later: ``manual`` makes a PaymentIntent stop at requires_capture;
    # what it then took (amount_received) or why it was released (cancellation_reason).
    capture_method: str | None = None
    amount_received: int | None = None
    cancellation_reason: str | None = None

    @property
    def manual(self) -> bool:
        return self.capture_method == "manual"


def _transient(why: str) -> Callable[[StripeFailure], TransientStripeError]:
    return lambda f: TransientStripeError(
        f"{why} ({f.http_status})",
        retry_after=f.retry_after,
        http_status=f.http_status,
        limited_globally=(f.rate_limited_reason or "").startswith("global"),
        lock_timeout=_locked(f),
    )


def _locked(f: StripeFailure) -> bool:
    """A 429 lock_timeout: another request held the object (no limiter's refusal)."""
    return f.http_status == 429 and f.code == "lock_timeout"


def _missing(f: StripeFailure, customer: str | None, customer_param: str) -> PaymentServiceError:
    if f.param == "payment_method":
        return InvalidRequest(
            "No such payment method.", code="payment_method_not_found", param="payment_method"
        )
    if customer is not None and f.param in (None, "customer", "id"):
        return CustomerNotFound(f"No such customer: {customer}", param=customer_param)
    return InvalidRequest(f.message or "No such object.", code=f.code or "resource_missing",
                          param=f.param)  # fmt: skip


Rule = tuple[
    str,
    Callable[[StripeFailure], bool],
    Callable[[StripeFailure, str | None, str], PaymentServiceError | TransientStripeError],
]

# First matching row wins.
STRIPE_FAILURES: tuple[Rule, ...] = (
    ("Stripe-Should-Retry: true (not a decline)",
     lambda f: f.should_retry is True and f.kind != "card",
     lambda f, *_: _transient("Stripe asked for a retry")(f)),
    ("no answer from Stripe", lambda f: f.kind == "connection",
     lambda f, *_: TransientStripeError("connection to Stripe failed")),
    ("object locked", _locked,
     lambda f, *_: _transient("Stripe held the object for another request")(f)),
    ("rate limited", lambda f: f.kind == "rate_limit" or f.http_status == 429,
     lambda f, *_: _transient("Stripe rate limit")(f)),
    ("same key still in flight", lambda f: f.kind == "idempotency" and f.http_status == 409,
     lambda f, *_: _transient("concurrent request on the same idempotency key")(f)),
    ("5xx that must not be retried", lambda f: f.http_status >= 500 and f.should_retry is False,
     lambda f, *_: UpstreamError(f"Stripe refused the request ({f.http_status})")),
    ("5xx", lambda f: f.http_status >= 500 or f.kind == "api",
     lambda f, *_: _transient("Stripe answered")(f)),
    ("card declined", lambda f: f.kind == "card" or f.http_status == 402,
     lambda f, *_: CardDeclined(f.message or "The card was declined.",
                                code=f.code or "card_declined", decline_code=f.decline_code)),
    ("our Stripe key refused", lambda f: f.kind == "authentication",
     lambda f, *_: StripeUnavailable(
         "The payment processor rejected the service's credentials.",
         code="stripe_authentication_failed")),
    ("no such object", lambda f: f.http_status == 404 or f.code == "resource_missing", _missing),
    ("key reused with other parameters", lambda f: f.kind == "idempotency",
     lambda f, *_: UpstreamError("Stripe refused a reused idempotency key.",
                                 code="idempotency_error")),
    ("anything else Stripe refused", lambda f: True,
     lambda f, *_: InvalidRequest(f.message or "Stripe rejected the request.",
                                  code=f.code or "stripe_invalid_request", param=f.param)),
)  # fmt: skip


def translate(
    failure: StripeFailure, *, customer: str | None = None, customer_param: str = "account_id"
) -> PaymentServiceError | TransientStripeError:
    """A failed Stripe call as a final service error or a TransientStripeError."""
    for _, matches, make in STRIPE_FAILURES:
        if matches(failure):
            return make(failure, customer, customer_param)
    raise AssertionError("the last rule matches everything")  # pragma: no cover


def for_reader(error: TransientStripeError) -> PaymentServiceError:
    """A reader asked (GET): tell it now rather than retrying on its time."""
    headers = {"Retry-After": str(max(1, int(error.retry_after or 1)))}
    if error.http_status == 429:
        return RateLimited("Stripe is rate limiting; retry later.", headers=headers)
    return StripeUnavailable(headers=headers)


# Fields a payment drops once its customer no longer has to act.
ACTION_FIELDS = ("next_action", "client_secret")


@dataclass(frozen=True, slots=True)
class Settled:
    """Where a payment stands after Stripe's answer, and what its record then holds."""

    status: Status  # PROCESSING: not settled yet, ask again shortly
    error: PaymentServiceError | None = None
    # Written to the record (besides the status and the error), and removed from it.
    fields: Mapping[str, str] = field(default_factory=dict)
    clear: tuple[str, ...] = ()

    @property
    def record_fields(self) -> dict[str, str]:
        """Everything written: the fields and the error (its body and HTTP status)."""
        if self.error is None:
            return dict(self.fields)
        return {**self.fields, "error": orjson.dumps(self.error.to_dict()).decode(),
                "error_status": str(self.error.status_code)}  # fmt: skip

    @property
    def record_clear(self) -> tuple[str, ...]:
        """Everything removed: a payment without an error loses an earlier one."""
        return self.clear if self.error is not None else (*self.clear, "error", "error_status")

    def or_unknown(self) -> Settled:
        """Still processing at Stripe with no attempt left to ask again: ``unknown``, which
        the reconciler asks again (the Stripe ids found are kept)."""
        if self.status is not Status.PROCESSING:
            return self
        return replace(self, status=Status.UNKNOWN, error=outcome_unknown())


INTENT_STATUSES: dict[str, Callable[[ChargeOutcome], Settled]] = {
    "succeeded": lambda o: Settled(Status.SUCCEEDED),
    "processing": lambda o: Settled(Status.PROCESSING),
    "requires_action": lambda o: Settled(
        Status.REQUIRES_ACTION,
        CardDeclined(
            "The card requires authentication by the customer (3-D Secure); "
            "the payment was not charged.",
            code="authentication_required",
        ),
    ),
    "requires_payment_method": lambda o: Settled(
        Status.FAILED,
        CardDeclined("The payment was not completed.", code="payment_intent_" + o.status),
    ),
    # An authorization released (a void, or Stripe's own after 7 days) captured nothing: its
    # payment is canceled. Any other PaymentIntent canceled never charged: failed; so does
    # one of manual capture canceled before it was authorized (its customer's 3-D Secure never
    # completed: no charge was made).
    "canceled": lambda o: (
        Settled(Status.CANCELED)
        if o.manual and o.charge_id
        else Settled(
            Status.FAILED,
            CardDeclined("The payment was not completed.", code="payment_intent_" + o.status),
        )
    ),
    "requires_capture": lambda o: Settled(Status.REQUIRES_CAPTURE),
}


def settle(intent: ChargeOutcome) -> Settled:
    """What a PaymentIntent means for its payment's record: the status, the error, and the
    fields written and removed. The one map of every path that learns of a PaymentIntent (the
    charge attempt, the reconciler, webhooks, the re-check). An unexpected status is a 502,
    not charged as far as the service knows only because Stripe said so. A customer who must
    act gets the next action (``use_stripe_sdk`` when Stripe names none, as it does not for
    every 3-D Secure flow) and the client secret for the merchant's front end."""
    make = INTENT_STATUSES.get(intent.status)
    verdict = (
        make(intent)
        if make is not None
        else Settled(
            Status.FAILED, UpstreamError(f"Unexpected PaymentIntent status {intent.status}.")
        )
    )
    fields = {"payment_intent": intent.payment_intent_id}
    if intent.charge_id:
        fields["charge"] = intent.charge_id
    if intent.manual and verdict.status is Status.SUCCEEDED and intent.amount_received:
        fields["amount_captured_minor"] = str(intent.amount_received)
    if verdict.status is Status.CANCELED:
        fields["cancellation_reason"] = intent.cancellation_reason or "requested"
    if verdict.status is not Status.REQUIRES_ACTION:
        return Settled(verdict.status, verdict.error, fields, ACTION_FIELDS)
    fields["next_action"] = intent.next_action or "use_stripe_sdk"
    if intent.client_secret:
        fields["client_secret"] = intent.client_secret
    return Settled(verdict.status, verdict.error, fields)


def not_charged(attempts: int) -> StripeUnavailable:
    """Retries ran out, and Stripe's own records show no charge: only then is this said."""
    return StripeUnavailable(
        f"The payment processor could not be reached after {attempts} attempts, and it holds "
        "no charge for this payment: the payment was not charged. Retry later with a new "
        "Idempotency-Key.",
        code="stripe_unavailable",
    )


def outcome_unknown() -> OutcomeUnknown:
    """Retries ran out and Stripe could not be asked whether an earlier attempt charged."""
    return OutcomeUnknown()


# --- Stripe's webhook events: the types the service acts on ----------------------------------
# Each only names the object to fetch again (worker.stripe_events); its data is never trusted.
INTENT_EVENTS = frozenset(
    {
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.requires_action",
        "payment_intent.processing",
        "payment_intent.canceled",
        "payment_intent.amount_capturable_updated",
    }
)
CHARGE_EVENTS = frozenset({"charge.refunded", "charge.dispute.created"})
HANDLED_EVENTS = INTENT_EVENTS | CHARGE_EVENTS


def event_type_label(event_type: str) -> str:
    """The metric label of an event type: handled ones by name, any other as ``other``."""
    return event_type if event_type in HANDLED_EVENTS else "other"


# --- refunds: a Stripe Refund's status to our refund's -----------------------------------------


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    """What Stripe says of a Refund."""

    id: str
    status: str  # succeeded, pending, requires_action, failed, canceled
    amount_minor: int
    refund_id: str | None = None  # ours, from its metadata
    failure_reason: str | None = None


def refund_settled(outcome: RefundOutcome) -> tuple[str, PaymentServiceError | None]:
    """Our refund's status for a Stripe Refund's (``pending``: ask again shortly)."""
    if outcome.status == "succeeded":
        return "succeeded", None
    if outcome.status in ("failed", "canceled"):
        reason = outcome.failure_reason or outcome.status
        return "failed", UpstreamError(
            f"Stripe did not refund the payment ({reason}); nothing was refunded.",
            code="refund_failed",
        )
    return "pending", None
