"""The one map from Stripe's answers to the service's outcomes, tested as a table."""

from __future__ import annotations

import pytest

from shared.errors import PaymentServiceError
from shared.payments.states import Status
from shared.stripe.objects import charge_state
from shared.stripe.outcomes import (
    ChargeOutcome,
    StripeFailure,
    TransientStripeError,
    for_reader,
    settle,
    translate,
)

# (failure, expected: "transient" or (http status, code))
FAILURES: list[tuple[StripeFailure, str | tuple[int, str]]] = [
    (StripeFailure("connection"), "transient"),
    (StripeFailure("rate_limit", 429, retry_after=2), "transient"),
    (StripeFailure("api", 500), "transient"),
    (StripeFailure("api", 503, should_retry=True), "transient"),
    (StripeFailure("api", 500, should_retry=False), (502, "stripe_error")),
    (StripeFailure("idempotency", 409), "transient"),
    (StripeFailure("idempotency", 400, code="idempotency_key_in_use"), (502, "idempotency_error")),
    (StripeFailure("card", 402, code="card_declined", decline_code="insufficient_funds"),
     (402, "card_declined")),
    (StripeFailure("card", 402, should_retry=True), (402, "card_declined")),  # a decline is final
    (StripeFailure("authentication", 401), (503, "stripe_authentication_failed")),
    (StripeFailure("invalid_request", 404, code="resource_missing", param="customer"),
     (404, "customer_not_found")),
    (StripeFailure("invalid_request", 404, code="resource_missing", param="payment_method"),
     (400, "payment_method_not_found")),
    (StripeFailure("invalid_request", 400, code="amount_too_small", param="amount"),
     (400, "amount_too_small")),
]  # fmt: skip


@pytest.mark.parametrize(("failure", "expected"), FAILURES)
def test_each_stripe_failure_maps_to_one_outcome(
    failure: StripeFailure, expected: str | tuple[int, str]
) -> None:
    result = translate(failure, customer="cus_A")
    if expected == "transient":
        assert isinstance(result, TransientStripeError)
    else:
        assert isinstance(result, PaymentServiceError)
        assert (result.status_code, result.code) == expected


def test_a_declines_code_reaches_the_client() -> None:
    result = translate(StripeFailure("card", 402, decline_code="insufficient_funds"))
    assert isinstance(result, PaymentServiceError)
    assert result.to_dict()["decline_code"] == "insufficient_funds"


@pytest.mark.parametrize(
    ("http_status", "expected"), [(429, (429, "rate_limited")), (503, (503, "stripe_unavailable"))]
)
def test_a_reader_is_told_at_once_with_retry_after(
    http_status: int, expected: tuple[int, str]
) -> None:
    error = for_reader(TransientStripeError("x", retry_after=3, http_status=http_status))
    assert (error.status_code, error.code) == expected
    assert error.headers["Retry-After"] == "3"


# (PaymentIntent status, payment status, HTTP status of its error or None)
INTENTS = [
    ("succeeded", Status.SUCCEEDED, None),
    ("processing", Status.PROCESSING, None),
    ("requires_action", Status.REQUIRES_ACTION, 402),
    ("requires_payment_method", Status.FAILED, 402),
    ("canceled", Status.FAILED, 402),
    ("requires_capture", Status.REQUIRES_CAPTURE, None),
]


def test_an_authorization_captured_or_released_settles_with_what_it_took_or_why() -> None:
    captured = settle(
        ChargeOutcome("succeeded", "pi_1", "ch_1", capture_method="manual", amount_received=3000)
    )
    expired = settle(
        ChargeOutcome(
            "canceled", "pi_1", "ch_1", capture_method="manual", cancellation_reason="automatic"
        )
    )

    assert (captured.status, captured.fields["amount_captured_minor"]) == (Status.SUCCEEDED, "3000")
    assert (expired.status, expired.error) == (Status.CANCELED, None)
    assert expired.fields["cancellation_reason"] == "automatic"


@pytest.mark.parametrize(("intent_status", "status", "http_status"), INTENTS)
def test_each_payment_intent_status_settles_one_way(
    intent_status: str, status: Status, http_status: int | None
) -> None:
    settled = settle(ChargeOutcome(intent_status, "pi_1", None))
    assert settled.status is status
    assert (settled.error.status_code if settled.error else None) == http_status


def test_a_charge_s_refunded_amount_counts_only_what_was_captured() -> None:
    partial = {"id": "ch_1", "amount": 4299, "amount_captured": 3000, "captured": True,
               "amount_refunded": 1299 + 500}  # fmt: skip
    released = {"id": "ch_2", "amount": 4299, "amount_captured": 0, "captured": False,
                "amount_refunded": 4299}  # fmt: skip
    whole = {"id": "ch_3", "amount": 4299, "amount_captured": 4299, "captured": True,
             "amount_refunded": 500}  # fmt: skip

    assert [charge_state(c).amount_refunded_minor for c in (partial, released, whole)] == [
        500, 0, 500]  # fmt: skip
