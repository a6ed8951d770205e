"""The Stripe calls the service makes (the ``shared.stripe`` package is the only place that
imports ``stripe``).

Typed, keyword-only calls for what the service does with Stripe. A failed call is described as a
``shared.stripe.outcomes.StripeFailure`` and mapped by that module's one table into the service's
errors, or into :class:`TransientStripeError` (network, 429, 5xx, a concurrent request on the
same idempotency key), which the worker retries with the same idempotency key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
import stripe

from shared.errors import (
    CustomerNotFound,
    CustomerNotOwned,
    PaymentMethodMissing,
)
from shared.payments.metadata import PAYMENT_ID_KEY
from shared.settings.service_settings import Settings
from shared.stripe.http_client import ThreadLocalCurlClient
from shared.stripe.objects import (
    CLIENT_METADATA,
    ChargePage,
    ChargeState,
    charge_client,
    charge_state,
    charge_summary,
    field_of,
    id_of,
    intent_outcome,
    refund_outcome,
)
from shared.stripe.outcomes import (
    ChargeOutcome,
    RefundOutcome,
    TransientStripeError,
    for_reader,
)
from shared.stripe.sdk_errors import translate_error
from shared.stripe.webhook_events import EventPage, event_ref

# Pinned: the shapes below (latest_charge, invoice_settings) are those of this API version, and
# an SDK upgrade must not silently change what Stripe sends back.
STRIPE_API_VERSION = "2026-10-28.endive"


def _segment(object_id: str) -> str:
    """``object_id`` as one URL path segment, percent-escaped, so that no id (from an event, a
    record or a client) can name another path: "/", "?", "#", NUL all become escapes. A dot
    segment ("", ".", "..") cannot be escaped (libcurl and yarl read "%2E%2E" as ".." and
    remove it) and an unpaired surrogate cannot be encoded: such an id names no object, and is
    answered as Stripe answers an id it does not know (404 resource_missing), nothing sent."""
    if object_id not in ("", ".", ".."):
        try:
            return quote(object_id, safe="")
        except UnicodeEncodeError:
            pass
    raise stripe.InvalidRequestError(  # type: ignore[no-untyped-call]
        f"No such object: {object_id!r}", "id", code="resource_missing", http_status=404
    )


class StripeGateway:
    """Stripe calls the service makes. Safe to share between threads and tasks."""

    def __init__(self, settings: Settings) -> None:
        self._owner_key = settings.customer_owner_metadata_key
        http_client = ThreadLocalCurlClient(timeout=settings.stripe_timeout_seconds)
        base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
        self._client = stripe.StripeClient(
            settings.stripe_key,
            base_addresses=base,  # type: ignore[arg-type]
            http_client=http_client,
            stripe_version=STRIPE_API_VERSION,
            # Retries belong to the worker (same key, backoff, bounded, recorded).
            max_network_retries=0,
        )
        # The API's reads (list_charges, on the event loop) go through aiohttp: httpx's
        # asyncio client costs far more CPU per call, which every accept on the same loop
        # would wait behind (docs/PERFORMANCE.md, reads next to accepts). Its session
        # is made on the first call, inside the running loop; aclose() ends it.
        self._async_http = stripe.AIOHTTPClient(
            timeout=aiohttp.ClientTimeout(total=settings.stripe_timeout_seconds)
        )
        self._async_client = stripe.StripeClient(
            settings.stripe_key,
            base_addresses=base,  # type: ignore[arg-type]
            http_client=self._async_http,
            stripe_version=STRIPE_API_VERSION,
            max_network_retries=0,
        )

    async def aclose(self) -> None:
        """End the asynchronous reads' HTTP session (the API's shutdown)."""
        await self._async_http.close_async()  # type: ignore[no-untyped-call]

    # Every call is a raw request read as plain JSON: the SDK still encodes the parameters,
    # sends the idempotency key and pinned version, and raises its typed errors, but does not
    # build StripeObjects, whose CPU on the API's event loop would stall every other request
    # (docs/PERFORMANCE.md).

    def _get(self, path: str, **params: Any) -> dict[str, Any]:
        data: dict[str, Any] = self._client.raw_request("get", path, **params).data
        return data

    def default_payment_method(
        self, *, customer: str, client: str | None = None, required: bool = True
    ) -> str | None:
        """The customer's invoice default payment method, else its default source (if it has
        neither: PaymentMethodMissing, or None when not ``required``), once the customer is
        known to be ``client``'s to charge: CustomerNotOwned when its metadata under
        CUSTOMER_OWNER_METADATA_KEY names another client."""
        try:
            cus = self._get(f"/v1/customers/{_segment(customer)}")
        except stripe.StripeError as exc:
            raise translate_error(exc, customer=customer) from exc
        if cus.get("deleted"):
            raise CustomerNotFound(f"No such customer: {customer}", param="account_id")
        owner = field_of(cus.get("metadata"), self._owner_key) if self._owner_key else None
        if owner and owner != client:
            raise CustomerNotOwned(param="account_id")
        method = id_of(field_of(cus.get("invoice_settings"), "default_payment_method")) or id_of(
            cus.get("default_source")
        )
        if not method and required:
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
        client: str | None = None,
        description: str | None = None,
        metadata: Mapping[str, str] | None = None,
        capture_method: str = "automatic",
    ) -> ChargeOutcome:
        """Create and confirm an off-session PaymentIntent, its metadata naming our payment id
        and the client that made it (the list shows a client only its own charges). Declines
        raise CardDeclined.

        ``metadata`` and ``description`` are the client's (checked at accept, none of the
        service's keys among them); the service's keys are written last, so they are the
        PaymentIntent's whatever the client's metadata holds. ``capture_method="manual"`` only
        authorizes: the PaymentIntent stops at requires_capture (the parameter is sent only
        then, so an automatic charge's request is what it always was)."""
        ours = {PAYMENT_ID_KEY: payment_id}
        if client:
            ours[CLIENT_METADATA] = client
        params: dict[str, Any] = {}
        if description:
            params["description"] = description
        if capture_method == "manual":
            params["capture_method"] = "manual"
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
                metadata={**(metadata or {}), **ours},
                idempotency_key=idempotency_key,
                **params,
            ).data
        except stripe.StripeError as exc:
            raise translate_error(exc, customer=customer) from exc
        return intent_outcome(intent)

    def retrieve_payment_intent(self, *, payment_intent_id: str) -> ChargeOutcome:
        try:
            intent = self._get(f"/v1/payment_intents/{_segment(payment_intent_id)}")
        except stripe.StripeError as exc:
            raise translate_error(exc) from exc
        return intent_outcome(intent)

    def capture_payment_intent(
        self, *, payment_intent_id: str, amount_minor: int | None, idempotency_key: str
    ) -> ChargeOutcome:
        """Capture an authorization, all of it or ``amount_minor`` (Stripe releases the rest).
        A PaymentIntent no longer requires_capture answers Stripe's 400
        ``payment_intent_unexpected_state`` (an InvalidRequest with that code)."""
        params: dict[str, Any] = {}
        if amount_minor is not None:
            params["amount_to_capture"] = amount_minor
        try:
            intent = self._client.raw_request(
                "post",
                f"/v1/payment_intents/{_segment(payment_intent_id)}/capture",
                idempotency_key=idempotency_key,
                **params,
            ).data
        except stripe.StripeError as exc:
            raise translate_error(exc) from exc
        return intent_outcome(intent)

    def cancel_payment_intent(
        self, *, payment_intent_id: str, idempotency_key: str
    ) -> ChargeOutcome:
        """Void an authorization: the PaymentIntent is canceled and the amount released."""
        try:
            intent = self._client.raw_request(
                "post",
                f"/v1/payment_intents/{_segment(payment_intent_id)}/cancel",
                idempotency_key=idempotency_key,
            ).data
        except stripe.StripeError as exc:
            raise translate_error(exc) from exc
        return intent_outcome(intent)

    async def list_charges(
        self, *, customer: str, limit: int, starting_after: str | None
    ) -> ChargePage:
        """One page of the customer's charges, newest first, read from Stripe (no cache), with
        the client each one's metadata names."""
        # The PaymentIntent is expanded for its metadata: our payment id lives there.
        params: dict[str, Any] = {
            "customer": customer,
            "limit": limit,
            "expand": ["data.payment_intent"],
        }
        if starting_after:
            params["starting_after"] = starting_after
        try:
            response = await self._async_client.raw_request_async("get", "/v1/charges", **params)
        except stripe.StripeError as exc:
            error = translate_error(exc, customer=customer, customer_param="customer_id")
            raise (for_reader(error) if isinstance(error, TransientStripeError) else error) from exc
        page: dict[str, Any] = response.data
        charges = page.get("data", ())
        return ChargePage(
            data=[charge_summary(c) for c in charges],
            has_more=bool(page.get("has_more")),
            owners=tuple(charge_client(c) for c in charges),
        )

    def find_payment_intent(
        self, *, customer: str, payment_id: str, created_since: int
    ) -> ChargeOutcome | None:
        """The newest of the customer's PaymentIntents created at or after ``created_since``
        (epoch seconds) that carries our ``payment_id``, whatever its status: one that made no
        charge (awaiting 3-D Secure, declined) is found as well as one that charged."""
        params: dict[str, Any] = {
            "customer": customer,
            "limit": 100,
            "created": {"gte": created_since},
        }
        try:
            while True:
                page = self._get("/v1/payment_intents", **params)
                for intent in page.get("data", ()):
                    if field_of(intent.get("metadata"), "payment_id") == payment_id:
                        return intent_outcome(intent)
                if not page.get("has_more") or not page.get("data"):
                    return None
                params["starting_after"] = page["data"][-1]["id"]
        except stripe.StripeError as exc:
            raise translate_error(exc, customer=customer) from exc

    def list_events(
        self,
        *,
        types: Sequence[str],
        created_gte: int,
        created_lte: int,
        starting_after: str | None = None,
        limit: int = 100,
    ) -> EventPage:
        """One page (newest first) of the events of ``types`` created in [gte, lte] (epoch
        seconds) whose delivery to a webhook endpoint failed or is still pending: what an
        endpoint that was down, or answered with the wrong secret, never took."""
        params: dict[str, Any] = {
            "types": list(types),
            "created": {"gte": created_gte, "lte": created_lte},
            "delivery_success": False,
            "limit": limit,
        }
        if starting_after:
            params["starting_after"] = starting_after
        try:
            page = self._get("/v1/events", **params)
        except stripe.StripeError as exc:
            raise translate_error(exc) from exc
        data = list(page.get("data", ()))
        return EventPage(
            events=[event_ref(event) for event in data],
            has_more=bool(page.get("has_more")) and bool(data),
            last_id=str(data[-1]["id"]) if data else None,
        )

    # --- payment lifecycle ------------------------------------------------------------------

    def retrieve_charge(self, *, charge_id: str) -> ChargeState:
        """A charge as Stripe has it now (refunds, dispute), with our payment id."""
        try:
            charge = self._get(f"/v1/charges/{_segment(charge_id)}", expand=["payment_intent"])
        except stripe.StripeError as exc:
            raise translate_error(exc) from exc
        return charge_state(charge)

    def create_refund(
        self,
        *,
        charge_id: str,
        amount_minor: int,
        refund_id: str,
        payment_id: str,
        idempotency_key: str,
    ) -> RefundOutcome:
        """Refund ``amount_minor`` of the charge, tagged with our ids (the key makes a retry
        the same request)."""
        try:
            refund = self._client.raw_request(
                "post",
                "/v1/refunds",
                charge=charge_id,
                amount=amount_minor,
                metadata={"refund_id": refund_id, "payment_id": payment_id},
                idempotency_key=idempotency_key,
            ).data
        except stripe.StripeError as exc:
            raise translate_error(exc) from exc
        return refund_outcome(refund)

    def retrieve_refund(self, *, stripe_refund_id: str) -> RefundOutcome:
        try:
            return refund_outcome(self._get(f"/v1/refunds/{_segment(stripe_refund_id)}"))
        except stripe.StripeError as exc:
            raise translate_error(exc) from exc

    def find_refund(self, *, charge_id: str, refund_id: str) -> RefundOutcome | None:
        """The Stripe Refund carrying our ``refund_id``, if the charge has one."""
        params: dict[str, Any] = {"charge": charge_id, "limit": 100}
        try:
            while True:
                page = self._get("/v1/refunds", **params)
                for refund in page.get("data", ()):
                    if field_of(refund.get("metadata"), "refund_id") == refund_id:
                        return refund_outcome(refund)
                if not page.get("has_more") or not page.get("data"):
                    return None
                params["starting_after"] = page["data"][-1]["id"]
        except stripe.StripeError as exc:
            raise translate_error(exc) from exc
