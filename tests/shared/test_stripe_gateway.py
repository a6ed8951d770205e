"""How Stripe's answers become the service's errors (what a client or the worker then does)."""

from __future__ import annotations

import stripe

from shared.errors import (
    CardDeclined,
    CustomerNotFound,
    InvalidRequest,
    StripeUnavailable,
    UpstreamError,
)
from shared.stripe.outcomes import TransientStripeError
from shared.stripe.sdk_errors import translate_error


def body(**error: object) -> dict[str, object]:
    return {"error": {"type": "invalid_request_error", "message": "m", **error}}


def test_a_decline_is_a_402_carrying_stripes_decline_code() -> None:
    exc = stripe.CardError(
        "Your card has insufficient funds.",
        None,
        "card_declined",
        http_status=402,
        json_body=body(type="card_error", code="card_declined", decline_code="insufficient_funds"),
    )
    error = translate_error(exc, customer="cus_A")
    assert isinstance(error, CardDeclined)
    assert error.status_code == 402
    assert error.to_dict()["code"] == "card_declined"
    assert error.to_dict()["decline_code"] == "insufficient_funds"


def test_rate_limits_network_errors_and_5xx_are_transient() -> None:
    limited = stripe.RateLimitError("slow down", http_status=429, headers={"retry-after": "2"})
    down = stripe.APIConnectionError("connection refused")
    broken = stripe.APIError("oops", http_status=500)
    for exc in (limited, down, broken):
        assert isinstance(translate_error(exc), TransientStripeError)
    translated = translate_error(limited)
    assert isinstance(translated, TransientStripeError)
    assert translated.retry_after == 2.0


def test_a_5xx_that_stripe_says_not_to_retry_is_final() -> None:
    exc = stripe.APIError("no", http_status=500, headers={"stripe-should-retry": "false"})
    assert isinstance(translate_error(exc), UpstreamError)


def test_a_missing_customer_is_a_404_on_account_id() -> None:
    exc = stripe.InvalidRequestError(
        "No such customer: 'cus_X'", "customer", "resource_missing", http_status=404
    )
    error = translate_error(exc, customer="cus_X")
    assert isinstance(error, CustomerNotFound)
    assert error.status_code == 404
    assert error.param == "account_id"


def test_bad_credentials_are_a_503_not_the_clients_fault() -> None:
    exc = stripe.AuthenticationError("Invalid API Key provided", http_status=401)
    error = translate_error(exc)
    assert isinstance(error, StripeUnavailable)
    assert "sk_" not in error.message


def test_other_invalid_requests_stay_400_with_stripes_param() -> None:
    exc = stripe.InvalidRequestError("Amount too large", "amount", "amount_too_large", 400)
    error = translate_error(exc)
    assert isinstance(error, InvalidRequest)
    assert error.status_code == 400
    assert error.param == "amount"
