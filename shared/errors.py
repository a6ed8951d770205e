"""The service's one error hierarchy. The API renders every one as ``{"error": {...}}``.

Each error carries the HTTP status that says what happened, a Stripe-style ``type``, a stable
machine-readable ``code``, a human ``message`` and, where one field is at fault, its ``param``.
Workers store the same shape on a failed payment, so polling shows what a synchronous call would.
"""

from __future__ import annotations

from typing import Any, ClassVar


class PaymentServiceError(Exception):
    http_status: ClassVar[int] = 400
    type: ClassVar[str] = "invalid_request_error"
    default_code: ClassVar[str] = "invalid_request"
    default_message: ClassVar[str] = "The request is invalid."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.status_code = status or self.http_status
        self.headers = headers or {}
        self.message = message or self.default_message
        self.code = code or self.default_code
        self.param = param
        self.extra = {k: v for k, v in extra.items() if v is not None}
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "code": self.code, "message": self.message}
        if self.param is not None:
            body["param"] = self.param
        body.update(self.extra)
        return body


class InvalidRequest(PaymentServiceError):
    pass


class AuthenticationFailed(PaymentServiceError):
    http_status = 401
    type = "authentication_error"
    default_code = "unauthenticated"
    default_message = "A valid API key is required: Authorization: Bearer <key>."


class InsufficientScope(PaymentServiceError):
    """An authenticated client whose scopes (API_CLIENTS ``scopes``) do not cover the route."""

    http_status = 403
    type = "permission_error"
    default_code = "insufficient_scope"
    default_message = "This client's scopes do not allow this request."


class CardDeclined(PaymentServiceError):
    http_status = 402
    type = "card_error"
    default_code = "card_declined"
    default_message = "The card was declined."


class PaymentMethodMissing(PaymentServiceError):
    http_status = 402
    type = "card_error"
    default_code = "payment_method_missing"
    default_message = (
        "The customer has no default payment method; pass payment_method or set the "
        "customer's invoice_settings.default_payment_method."
    )


class NotFound(PaymentServiceError):
    http_status = 404
    default_code = "resource_missing"
    default_message = "Not found."


class PaymentNotFound(NotFound):
    default_code = "payment_not_found"
    default_message = "No such payment."


class CustomerNotFound(NotFound):
    default_code = "customer_not_found"
    default_message = "No such customer."


class CustomerNotOwned(PaymentServiceError):
    """The Stripe customer belongs to another client (its metadata under
    CUSTOMER_OWNER_METADATA_KEY names it): refused before any charge."""

    http_status = 403
    type = "permission_error"
    default_code = "customer_not_owned"
    default_message = (
        "This customer belongs to another client of this service; the payment was not charged."
    )


class MethodNotAllowed(PaymentServiceError):
    http_status = 405
    default_code = "method_not_allowed"
    default_message = "This method is not allowed on this route."


class PayloadTooLarge(PaymentServiceError):
    http_status = 413
    default_code = "payload_too_large"
    default_message = "The request body is too large."


class UnsupportedMediaType(PaymentServiceError):
    http_status = 415
    default_code = "unsupported_media_type"
    default_message = "The request body must be JSON (Content-Type: application/json)."


class IdempotencyKeyMismatch(PaymentServiceError):
    http_status = 422
    type = "idempotency_error"
    default_code = "idempotency_key_reused"
    default_message = (
        "This Idempotency-Key was already used with a different request body; "
        "use a new key for a new payment."
    )


class RateLimited(PaymentServiceError):
    http_status = 429
    type = "rate_limit_error"
    default_code = "rate_limited"
    default_message = "Too many requests; retry later."


class UpstreamError(PaymentServiceError):
    """Stripe answered with something we could not use."""

    http_status = 502
    type = "api_error"
    default_code = "stripe_error"
    default_message = "The payment processor returned an error."


class ServiceUnavailable(PaymentServiceError):
    http_status = 503
    type = "api_error"
    default_code = "service_unavailable"
    default_message = "The service is temporarily unavailable; retry later."


class StripeUnavailable(ServiceUnavailable):
    default_code = "stripe_unavailable"
    default_message = "The payment processor is unreachable; retry later."


class StoreUnavailable(ServiceUnavailable):
    default_code = "redis_unavailable"
    default_message = "The payment store is unreachable; retry later."


class InternalError(PaymentServiceError):
    http_status = 500
    type = "api_error"
    default_code = "internal_error"
    default_message = "An unexpected error occurred; it has been logged."


class OutcomeUnknown(PaymentServiceError):
    """Stripe could not be asked whether an attempt charged. Not a failure: the payment's
    status is ``unknown`` and the service keeps asking; the client must not pay again."""

    http_status = 502
    type = "api_error"
    default_code = "outcome_unknown"
    default_message = (
        "The payment processor could not be reached to learn whether this payment was "
        "charged. The service keeps checking and will record the outcome; do not retry with a "
        "new Idempotency-Key. Poll the payment, or retry with the same key, to see it."
    )


class NotDurable(ServiceUnavailable):
    """Fewer replicas than ``REDIS_MIN_REPLICAS`` acknowledged the write in time.
    The write may stand on the primary alone, where a failover could lose it: retry with the
    same Idempotency-Key (the same payment id), which answers once the write is replicated."""

    default_code = "not_durable"
    default_message = (
        "The payment was written but not yet replicated, so a failover could lose it; retry "
        "with the same Idempotency-Key shortly (it never charges twice)."
    )

    def __init__(self, message: str | None = None, **kwargs: object) -> None:
        kwargs.setdefault("headers", {"Retry-After": "1"})
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


# --- payment lifecycle: webhooks in, refunds, callbacks ------------------------------------


class WebhookSignatureInvalid(InvalidRequest):
    """A Stripe webhook whose ``Stripe-Signature`` is missing, malformed, stale or made with
    none of STRIPE_WEBHOOK_SECRET's secrets: nothing was recorded."""

    default_code = "signature_invalid"
    default_message = "The Stripe-Signature header does not verify this body."


class Conflict(PaymentServiceError):
    http_status = 409
    default_code = "conflict"
    default_message = "The request conflicts with the payment's state."


class PaymentNotRefundable(Conflict):
    default_code = "payment_not_refundable"
    default_message = "Only a succeeded payment can be refunded."


class RefundExceedsCharge(Conflict):
    default_code = "refund_exceeds_charge"
    default_message = "The refund would exceed what is left of the charge."


class PaymentNotCapturable(Conflict):
    """A capture or void asked of a payment that is no authorization, or whose authorization
    already has another capture or void."""

    default_code = "payment_not_capturable"
    default_message = "Only an authorized payment (requires_capture) can be captured or voided."


class AuthorizationReleased(Conflict):
    """A capture that came too late: the authorization was released (voided, or expired)."""

    default_code = "authorization_released"
    default_message = "The authorization was released before the capture: nothing was captured."


class AlreadyCaptured(Conflict):
    """A void that came too late: the authorization was captured."""

    default_code = "payment_already_captured"
    default_message = "The authorization was captured before the void: nothing was released."


class RefundNotFound(NotFound):
    default_code = "refund_not_found"
    default_message = "No such refund."


class CallbackUrlRefused(InvalidRequest):
    """A ``callback_url`` the SSRF rules refuse (does not parse, scheme, host not allowed, an
    address off the public internet)."""

    default_code = "callback_url_invalid"
    default_message = "callback_url is not an allowed callback endpoint."


class PaymentInProgress(Conflict):
    """A cancel of a payment whose charge may already be at Stripe (an attempt started, or
    its outcome is unknown): it can no longer be stopped; its outcome follows."""

    default_code = "payment_in_progress"
    default_message = (
        "The payment's charge has already been sent to Stripe, so it can no longer be canceled; "
        "poll the payment for its outcome."
    )


class PaymentNotCancelable(Conflict):
    default_code = "payment_not_cancelable"
    default_message = "The payment is final and was not canceled; it can no longer be canceled."


class PaymentExpired(Conflict):
    """What an expired payment's record says (its status ``expired``): not charged."""

    default_code = "payment_expired"
    default_message = (
        "The payment's deadline (expires_at) passed before its charge was sent to Stripe: it was "
        "never sent to Stripe and was not charged."
    )
    # A replayed dead letter is queued again after attempts that reached Stripe and ended
    # failed (not charged, as Stripe answered): "never sent" would not be true of it.
    after_attempts_message = (
        "The payment's deadline (expires_at) passed before its charge was sent to Stripe again: "
        "no new charge was attempted, and its earlier attempts ended failed, not charged."
    )


class PaymentCanceled(Conflict):
    """What a canceled payment's record says (its status ``canceled``): not charged."""

    default_code = "payment_canceled"
    default_message = (
        "The payment was canceled at its client's request before its charge was sent to "
        "Stripe: it was never sent to Stripe and was not charged."
    )
    after_attempts_message = (
        "The payment was canceled at its client's request before its charge was sent to "
        "Stripe again: no new charge was attempted, and its earlier attempts ended failed, not "
        "charged."
    )
