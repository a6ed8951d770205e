"""The only module that imports ``stripe``.

Typed, keyword-only calls for what the service does with Stripe, with Stripe's errors translated
into ``shared.errors`` types. Transient failures (network, 429, 5xx, a concurrent request on the
same idempotency key) raise :class:`TransientStripeError`, which the worker retries with the same
idempotency key; everything else is final.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import stripe

from shared.config import Settings
from shared.errors import (
    CardDeclined,
    CustomerNotFound,
    InvalidRequest,
    PaymentMethodMissing,
    RateLimited,
    StripeUnavailable,
    UpstreamError,
)
from shared.money import format_minor

# Pinned: the shapes below (latest_charge, invoice_settings) are those of this API version, and
# an SDK upgrade must not silently change what Stripe sends back.
STRIPE_API_VERSION = "2026-10-28.endive"


class TransientStripeError(Exception):
    """Stripe could not answer now; the same request with the same key may succeed later."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ChargeOutcome:
    status: str  # the PaymentIntent's status: succeeded, requires_action, processing, ...
    payment_intent_id: str
    charge_id: str | None
    next_action: str | None = None


@dataclass(frozen=True, slots=True)
class ChargeSummary:
    id: str
    amount: str
    currency: str
    status: str
    created: int
    payment_intent: str | None
    description: str | None
    payment_id: str | None
    failure_code: str | None
    refunded: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status,
            "created": self.created,
            "payment_intent": self.payment_intent,
            "description": self.description,
            "payment_id": self.payment_id,
            "failure_code": self.failure_code,
            "refunded": self.refunded,
        }


@dataclass(frozen=True, slots=True)
class ChargePage:
    data: list[ChargeSummary]
    has_more: bool

    @property
    def next_cursor(self) -> str | None:
        return self.data[-1].id if self.has_more and self.data else None


def _id_of(value: Any) -> str | None:
    """Stripe sends either an id or the expanded object (the emulator always expands)."""
    if value is None or isinstance(value, str):
        return value
    return str(value["id"])


def _field(obj: Any, name: str) -> Any:
    """A field of a JSON object that may be absent or null."""
    return obj.get(name) if isinstance(obj, dict) else None


def translate_error(
    exc: stripe.StripeError, *, customer: str | None = None, customer_param: str = "account_id"
) -> Exception:
    """Map a Stripe SDK error to the service's error (final) or a TransientStripeError."""
    status = exc.http_status or 0
    code = exc.code
    should_retry = (exc.headers or {}).get("stripe-should-retry")
    if should_retry == "true" and not isinstance(exc, stripe.CardError):
        return TransientStripeError(
            f"Stripe asked for a retry ({status})", retry_after=_retry_after(exc)
        )
    message = exc.user_message if isinstance(exc, stripe.CardError) else None
    if isinstance(exc, stripe.APIConnectionError):
        return TransientStripeError(f"connection to Stripe failed: {exc.__class__.__name__}")
    if isinstance(exc, stripe.RateLimitError) or status == 429:
        return TransientStripeError("Stripe rate limit", retry_after=_retry_after(exc))
    if isinstance(exc, stripe.IdempotencyError) and status == 409:
        # Stripe is still processing the first request with this key: ask again shortly.
        return TransientStripeError("concurrent request on the same idempotency key")
    if status >= 500 or isinstance(exc, stripe.APIError):
        if should_retry == "false":
            return UpstreamError(f"Stripe refused the request ({status})", code="stripe_error")
        return TransientStripeError(f"Stripe answered {status}", retry_after=_retry_after(exc))
    if isinstance(exc, stripe.CardError) or status == 402:
        decline_code = getattr(exc.error, "decline_code", None) if exc.error else None
        return CardDeclined(
            message or str(exc.user_message or "The card was declined."),
            code=code or "card_declined",
            decline_code=decline_code,
        )
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return StripeUnavailable(
            "The payment processor rejected the service's credentials.",
            code="stripe_authentication_failed",
        )
    param = getattr(exc, "param", None)
    if status == 404 or code == "resource_missing":
        if param in (None, "customer", "id") and customer is not None:
            return CustomerNotFound(f"No such customer: {customer}", param=customer_param)
        if param == "payment_method":
            return InvalidRequest(
                "No such payment method.", code="payment_method_not_found", param="payment_method"
            )
    if isinstance(exc, stripe.IdempotencyError):
        return UpstreamError("Stripe refused a reused idempotency key.", code="idempotency_error")
    return InvalidRequest(
        exc.user_message or "Stripe rejected the request.",
        code=code or "stripe_invalid_request",
        param=param,
    )


def _retry_after(exc: stripe.StripeError) -> float | None:
    value = (exc.headers or {}).get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class StripeGateway:
    """Stripe calls the service makes. Safe to share between threads and tasks."""

    def __init__(self, settings: Settings) -> None:
        http_client = stripe.HTTPXClient(
            timeout=settings.stripe_timeout_seconds, allow_sync_methods=True
        )
        base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
        self._client = stripe.StripeClient(
            settings.stripe_key,
            base_addresses=base,  # type: ignore[arg-type]
            http_client=http_client,
            stripe_version=STRIPE_API_VERSION,
            # Retries belong to the worker (same key, backoff, bounded, recorded).
            max_network_retries=0,
        )

    # Every call is a raw request read as plain JSON: the SDK still encodes the parameters,
    # sends the idempotency key and pinned version, and raises its typed errors, but does not
    # build StripeObjects (measured at ~5 ms of CPU for a 20-charge page with expanded
    # PaymentIntents, which on the API's event loop stalls every other request).

    def _get(self, path: str, **params: Any) -> dict[str, Any]:
        data: dict[str, Any] = self._client.raw_request("get", path, **params).data
        return data

    def default_payment_method(self, *, customer: str) -> str:
        """The customer's invoice default payment method, else its default source."""
        try:
            cus = self._get(f"/v1/customers/{customer}")
        except stripe.StripeError as exc:
            raise translate_error(exc, customer=customer) from exc
        if cus.get("deleted"):
            raise CustomerNotFound(f"No such customer: {customer}", param="account_id")
        method = _id_of(_field(cus.get("invoice_settings"), "default_payment_method")) or _id_of(
            cus.get("default_source")
        )
        if not method:
            raise PaymentMethodMissing()
        return method

    def create_payment_intent(
        self,
        *,
        customer: str,
        amount_minor: int,
        currency: str,
        payment_method: str,
        payment_id: str,
        idempotency_key: str,
    ) -> ChargeOutcome:
        """Create and confirm an off-session PaymentIntent. Declines raise CardDeclined."""
        try:
            intent = self._client.raw_request(
                "post",
                "/v1/payment_intents",
                customer=customer,
                amount=amount_minor,
                currency=currency,
                payment_method=payment_method,
                payment_method_types=["card"],
                confirm=True,
                off_session=True,
                metadata={"payment_id": payment_id},
                idempotency_key=idempotency_key,
            ).data
        except stripe.StripeError as exc:
            raise translate_error(exc, customer=customer) from exc
        return _outcome(intent)

    def retrieve_payment_intent(self, *, payment_intent_id: str) -> ChargeOutcome:
        try:
            intent = self._get(f"/v1/payment_intents/{payment_intent_id}")
        except stripe.StripeError as exc:
            raise translate_error(exc) from exc
        return _outcome(intent)

    async def list_charges(
        self, *, customer: str, limit: int, starting_after: str | None
    ) -> ChargePage:
        """One page of the customer's charges, newest first, read from Stripe (no cache)."""
        # The PaymentIntent is expanded for its metadata: our payment id lives there.
        params: dict[str, Any] = {
            "customer": customer,
            "limit": limit,
            "expand": ["data.payment_intent"],
        }
        if starting_after:
            params["starting_after"] = starting_after
        try:
            response = await self._client.raw_request_async("get", "/v1/charges", **params)
        except stripe.StripeError as exc:
            error = translate_error(exc, customer=customer, customer_param="customer_id")
            if isinstance(error, TransientStripeError):
                # A reader asked: tell it now rather than retrying on its time.
                headers = {"Retry-After": str(int(error.retry_after or 1))}
                if exc.http_status == 429:
                    raise RateLimited(
                        "Stripe is rate limiting; retry later.", headers=headers
                    ) from exc
                raise StripeUnavailable(headers=headers) from exc
            raise error from exc
        page: dict[str, Any] = response.data
        return ChargePage(
            data=[_summary(c) for c in page.get("data", ())], has_more=bool(page.get("has_more"))
        )

    def find_payment_intent(
        self, *, customer: str, payment_id: str, created_after: int
    ) -> ChargeOutcome | None:
        """The PaymentIntent that already charged ``payment_id``, if any, found through the
        customer's charges (PaymentIntents cannot be listed by customer on every Stripe)."""
        params: dict[str, Any] = {
            "customer": customer,
            "limit": 100,
            "created": {"gt": created_after},
            "expand": ["data.payment_intent"],
        }
        try:
            while True:
                page = self._get("/v1/charges", **params)
                for charge in page.get("data", ()):
                    intent = charge.get("payment_intent")
                    if isinstance(intent, dict) and (
                        _field(intent.get("metadata"), "payment_id") == payment_id
                    ):
                        return _outcome(intent)
                if not page.get("has_more") or not page.get("data"):
                    return None
                params["starting_after"] = page["data"][-1]["id"]
        except stripe.StripeError as exc:
            raise translate_error(exc, customer=customer) from exc


def _outcome(intent: dict[str, Any]) -> ChargeOutcome:
    next_action = intent.get("next_action")
    return ChargeOutcome(
        status=str(intent["status"]),
        payment_intent_id=str(intent["id"]),
        charge_id=_id_of(intent.get("latest_charge")),
        next_action=str(_field(next_action, "type")) if next_action else None,
    )


def _summary(charge: dict[str, Any]) -> ChargeSummary:
    intent = _field(charge, "payment_intent")
    payment_id = _field(_field(charge, "metadata"), "payment_id") or (
        None if isinstance(intent, str) else _field(_field(intent, "metadata"), "payment_id")
    )
    return ChargeSummary(
        id=str(charge["id"]),
        amount=format_minor(int(charge["amount"]), str(charge["currency"])),
        currency=str(charge["currency"]),
        status=str(charge["status"]),
        created=int(charge["created"]),
        payment_intent=_id_of(intent),
        description=_field(charge, "description"),
        payment_id=payment_id,
        failure_code=_field(charge, "failure_code"),
        refunded=bool(_field(charge, "refunded")),
    )


__all__ = [
    "STRIPE_API_VERSION",
    "ChargeOutcome",
    "ChargePage",
    "ChargeSummary",
    "StripeGateway",
    "TransientStripeError",
    "translate_error",
]
