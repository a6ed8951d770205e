"""A Stripe SDK error as plain data (``StripeFailure``), which ``shared.stripe.outcomes``' table
maps to the service's errors or a ``TransientStripeError``."""

from __future__ import annotations

from typing import Any

import stripe

from shared.stripe.outcomes import StripeFailure, translate


def describe(exc: stripe.StripeError) -> StripeFailure:
    """A Stripe SDK error as plain data for shared.stripe.outcomes' table."""
    kind: Any
    if isinstance(exc, stripe.APIConnectionError):
        kind = "connection"
    elif isinstance(exc, stripe.RateLimitError):
        kind = "rate_limit"
    elif isinstance(exc, stripe.CardError):
        kind = "card"
    elif isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        kind = "authentication"
    elif isinstance(exc, stripe.IdempotencyError):
        kind = "idempotency"
    elif isinstance(exc, stripe.APIError):
        kind = "api"
    else:
        kind = "invalid_request"
    headers = exc.headers or {}
    should_retry = headers.get("stripe-should-retry")
    return StripeFailure(
        kind=kind,
        http_status=exc.http_status or 0,
        code=exc.code,
        message=exc.user_message,
        param=getattr(exc, "param", None),
        decline_code=getattr(exc.error, "decline_code", None) if exc.error else None,
        should_retry=None if should_retry is None else should_retry == "true",
        retry_after=_retry_after(headers.get("retry-after")),
        rate_limited_reason=headers.get("stripe-rate-limited-reason"),
    )


def translate_error(
    exc: stripe.StripeError, *, customer: str | None = None, customer_param: str = "account_id"
) -> Exception:
    """A Stripe SDK error as the service's error (final) or a TransientStripeError."""
    return translate(describe(exc), customer=customer, customer_param=customer_param)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
