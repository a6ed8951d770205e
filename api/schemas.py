"""Request and response shapes of the HTTP API (also what /docs shows)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    field_validator,
)

from shared.money import SUPPORTED_CURRENCIES

CUSTOMER_ID_PATTERN = r"^cus_[A-Za-z0-9]{1,64}$"
PAYMENT_METHOD_PATTERN = r"^(pm|card|src)_[A-Za-z0-9_]{1,64}$"
PAYMENT_ID_PATTERN = r"^pay_[0-9a-f]{24}$"
CHARGE_ID_PATTERN = r"^(ch|py)_[A-Za-z0-9]{1,64}$"
AMOUNT_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,12})?$"


class PaymentRequest(BaseModel):
    """``POST /payments``. Strict: a JSON number, bool, null or list where a string belongs, or
    a field the service does not know, is refused (as Stripe refuses unknown parameters)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    account_id: Annotated[str, StringConstraints(pattern=CUSTOMER_ID_PATTERN)] = Field(
        description="The Stripe customer to charge (cus_...).", examples=["cus_Nffrfeuf3qpRJC"]
    )
    amount: Annotated[str, StringConstraints(pattern=AMOUNT_PATTERN, max_length=32)] = Field(
        description='Decimal string in major units, e.g. "42.99"; never a JSON number.',
        examples=["42.99"],
    )
    currency: str = Field(
        default="usd",
        description="ISO 4217 code, lower case.",
        json_schema_extra={"enum": list[JsonValue](sorted(SUPPORTED_CURRENCIES))},
    )
    payment_method: Annotated[str, StringConstraints(pattern=PAYMENT_METHOD_PATTERN)] | None = (
        Field(default=None, description="Defaults to the customer's default payment method.")
    )

    @field_validator("currency")
    @classmethod
    def _supported_currency(cls, value: str) -> str:
        if value not in SUPPORTED_CURRENCIES:
            raise ValueError("unsupported currency")
        return value


class ErrorBody(BaseModel):
    type: str = Field(examples=["invalid_request_error"])
    code: str = Field(examples=["amount_invalid"])
    message: str
    param: str | None = None
    decline_code: str | None = None
    payment_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Payment(BaseModel):
    id: str = Field(examples=["pay_3f9c2a7be1d04c55a9e1f0d2"])
    object: Literal["payment"] = "payment"
    status: Literal["queued", "processing", "succeeded", "failed", "requires_action"]
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
    next_action: str | None = None
    error: ErrorBody | None = None


class CustomerCharge(BaseModel):
    id: str
    amount: str = Field(examples=["42.99"])
    currency: str
    status: str
    created: int
    payment_intent: str | None
    description: str | None
    payment_id: str | None = Field(description="This service's payment id, when it made it.")
    failure_code: str | None
    refunded: bool


class CustomerPayments(BaseModel):
    object: Literal["list"] = "list"
    data: list[CustomerCharge]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as starting_after for the next page.")


def error_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI entries for the error answers a route can give."""
    return {status: {"model": ErrorResponse} for status in statuses}
