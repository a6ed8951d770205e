"""The only module that imports ``stripe``.

Typed, keyword-only calls for what the service does with Stripe. A failed call is described as a
``shared.outcomes.StripeFailure`` and mapped by that module's one table into the service's
errors, or into :class:`TransientStripeError` (network, 429, 5xx, a concurrent request on the
same idempotency key), which the worker retries with the same idempotency key.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import aiohttp
import pycurl
import stripe

from shared.config import Settings
from shared.errors import (
    CustomerNotFound,
    InvalidRequest,
    PaymentMethodMissing,
    WebhookSignatureInvalid,
)
from shared.money import format_minor
from shared.outcomes import (
    ChargeOutcome,
    RefundOutcome,
    StripeFailure,
    TransientStripeError,
    for_reader,
    translate,
)

# Pinned: the shapes below (latest_charge, invoice_settings) are those of this API version, and
# an SDK upgrade must not silently change what Stripe sends back.
STRIPE_API_VERSION = "2026-10-28.endive"


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
    amount_refunded: str = "0"


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


def describe(exc: stripe.StripeError) -> StripeFailure:
    """A Stripe SDK error as plain data for shared.outcomes' table."""
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


class _ResponseHeaders:
    """libcurl hands over a response's header lines one by one; a new status line (after a
    ``100 Continue``, say) starts the set again. Names are kept lower-case, as the SDK and
    ``describe`` read them; a repeated header's values are joined with ", " (RFC 9110)."""

    __slots__ = ("headers",)

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}

    def line(self, raw: bytes) -> None:
        text = raw.decode("iso-8859-1")
        if text.startswith("HTTP/"):
            self.headers = {}
            return
        name, sep, value = text.partition(":")
        if not sep:
            return  # the blank line that ends the headers
        key, value = name.strip().lower(), value.strip()
        self.headers[key] = f"{self.headers[key]}, {value}" if key in self.headers else value


class ThreadLocalCurlClient(stripe.HTTPClient):
    """The workers' synchronous Stripe calls over libcurl (pycurl), one easy handle (and so one
    kept-alive connection) per thread.

    Why not the SDK's clients: a worker's charge is CPU-bound on its process's one core, and
    the HTTP client was the largest share of it. Measured sequentially against the bench's
    Stripe stub, one call through the SDK cost about 1,150 us of CPU with httpx, 1,500 with
    requests, 700-780 with urllib3 and 420-450 with pycurl, of which about 150 are the SDK's own
    (docs/PERFORMANCE.md, drain). The SDK's PycurlClient shares one handle between threads
    (it is not thread-safe) and fixes its timeouts at 30 s to connect and 80 s in all; this
    one takes STRIPE_TIMEOUT_SECONDS for the whole call, like the other clients here.

    Every libcurl failure (refused, reset, timed out, TLS) is a ``stripe.APIConnectionError``,
    as with the SDK's own clients: ``describe`` makes it a transient failure, and the charge
    is retried with the same idempotency key. A proxy is taken from the standard environment
    variables (``HTTPS_PROXY``, ``NO_PROXY``) by libcurl itself, as httpx did.
    """

    name = "pycurl"

    def __init__(self, *, timeout: float, verify_ssl_certs: bool = True) -> None:
        super().__init__(verify_ssl_certs=verify_ssl_certs)
        self._timeout_ms = max(1, int(timeout * 1000))
        self._local = threading.local()
        self._handles: list[pycurl.Curl] = []  # every thread's, for close()
        self._lock = threading.Lock()

    def _handle(self) -> pycurl.Curl:
        curl: pycurl.Curl | None = getattr(self._local, "curl", None)
        if curl is None:
            curl = self._local.curl = pycurl.Curl()
            with self._lock:
                self._handles.append(curl)
        return curl

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        curl = self._handle()
        # reset() clears the options of the last call but keeps its connection open.
        curl.reset()
        body = BytesIO()
        answer = _ResponseHeaders()
        if method == "get":
            curl.setopt(pycurl.HTTPGET, 1)
        elif method == "post":
            # The body through a read function that cannot rewind, not POSTFIELDS: when a
            # kept-alive connection closes after the request went out and before any answer,
            # libcurl would send the request again on a new connection by itself. Here it
            # cannot, and the call fails as with every other client: whether Stripe acted is
            # unknown, and the worker looks before it writes again (worker.charge, rule 2).
            data = (post_data or "").encode()
            curl.setopt(pycurl.POST, 1)
            curl.setopt(pycurl.POSTFIELDSIZE, len(data))
            curl.setopt(pycurl.READFUNCTION, BytesIO(data).read)
        else:
            curl.setopt(pycurl.CUSTOMREQUEST, method.upper())
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.WRITEDATA, body)
        curl.setopt(pycurl.HEADERFUNCTION, answer.line)
        curl.setopt(pycurl.NOSIGNAL, 1)  # threads: timeouts without SIGALRM
        curl.setopt(pycurl.TIMEOUT_MS, self._timeout_ms)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, self._timeout_ms)
        curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        # "Expect:" stops libcurl from waiting for a 100 Continue before a larger body.
        lines = [f"{name}: {value}" for name, value in (headers or {}).items()]
        curl.setopt(pycurl.HTTPHEADER, [*lines, "Expect:"])
        if self._verify_ssl_certs:
            curl.setopt(pycurl.CAINFO, stripe.ca_bundle_path)
        else:
            curl.setopt(pycurl.SSL_VERIFYPEER, 0)
            curl.setopt(pycurl.SSL_VERIFYHOST, 0)
        try:
            curl.perform()
        except pycurl.error as exc:
            code, message = (*exc.args, 0, "")[:2]
            raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
                f"Network error talking to Stripe: {message} (curl error {code})",
                should_retry=True,
            ) from exc
        status = int(curl.getinfo(pycurl.RESPONSE_CODE))
        return body.getvalue().decode("utf-8"), status, answer.headers

    def close(self) -> None:
        with self._lock:
            handles, self._handles = self._handles, []
        for curl in handles:
            curl.close()


class StripeGateway:
    """Stripe calls the service makes. Safe to share between threads and tasks."""

    def __init__(self, settings: Settings) -> None:
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
        # asyncio client cost several milliseconds of CPU per call, which every accept on the
        # same loop waited behind (docs/PERFORMANCE.md, reads next to accepts). Its session
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
            response = await self._async_client.raw_request_async("get", "/v1/charges", **params)
        except stripe.StripeError as exc:
            error = translate_error(exc, customer=customer, customer_param="customer_id")
            raise (for_reader(error) if isinstance(error, TransientStripeError) else error) from exc
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

    # --- payment lifecycle (issue 11) -------------------------------------------------------

    def retrieve_charge(self, *, charge_id: str) -> ChargeState:
        """A charge as Stripe has it now (refunds, dispute), with our payment id."""
        try:
            charge = self._get(f"/v1/charges/{charge_id}", expand=["payment_intent"])
        except stripe.StripeError as exc:
            raise translate_error(exc) from exc
        return _charge_state(charge)

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
        return _refund_outcome(refund)

    def retrieve_refund(self, *, stripe_refund_id: str) -> RefundOutcome:
        try:
            return _refund_outcome(self._get(f"/v1/refunds/{stripe_refund_id}"))
        except stripe.StripeError as exc:
            raise translate_error(exc) from exc

    def find_refund(self, *, charge_id: str, refund_id: str) -> RefundOutcome | None:
        """The Stripe Refund carrying our ``refund_id``, if the charge has one."""
        params: dict[str, Any] = {"charge": charge_id, "limit": 100}
        try:
            while True:
                page = self._get("/v1/refunds", **params)
                for refund in page.get("data", ()):
                    if _field(refund.get("metadata"), "refund_id") == refund_id:
                        return _refund_outcome(refund)
                if not page.get("has_more") or not page.get("data"):
                    return None
                params["starting_after"] = page["data"][-1]["id"]
        except stripe.StripeError as exc:
            raise translate_error(exc) from exc


def _refund_outcome(refund: dict[str, Any]) -> RefundOutcome:
    return RefundOutcome(
        id=str(refund["id"]),
        status=str(refund.get("status") or "pending"),
        amount_minor=int(refund["amount"]),
        refund_id=_field(refund.get("metadata"), "refund_id"),
        failure_reason=refund.get("failure_reason"),
    )


@dataclass(frozen=True, slots=True)
class ChargeState:
    """What Stripe says of a charge after the fact."""

    id: str
    payment_intent: str | None
    payment_id: str | None
    amount_minor: int
    amount_refunded_minor: int
    disputed: bool


@dataclass(frozen=True, slots=True)
class StripeEventRef:
    """A verified webhook event: which object it is about (its data is never trusted)."""

    id: str
    type: str
    object_type: str
    object_id: str
    charge_id: str | None  # a dispute's charge


def verify_stripe_event(
    payload: bytes, signature: str | None, secrets: tuple[str, ...], *, tolerance: int = 300
) -> StripeEventRef:
    """The event in ``payload`` if ``signature`` (Stripe-Signature) verifies it with one of
    ``secrets`` within ``tolerance`` seconds (the stripe library's own check); else
    WebhookSignatureInvalid."""
    if not secrets:
        raise WebhookSignatureInvalid("No STRIPE_WEBHOOK_SECRET is configured: nothing verifies.")
    if not signature:
        raise WebhookSignatureInvalid("The Stripe-Signature header is missing.")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookSignatureInvalid("The body is not UTF-8.") from None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, signature, secret, tolerance)
            break
        except stripe.SignatureVerificationError:
            continue
    else:
        raise WebhookSignatureInvalid(
            "The Stripe-Signature header is malformed, stale or made with another secret."
        )
    try:
        event = json.loads(text)
        obj = event["data"]["object"]
        return StripeEventRef(
            id=str(event["id"]),
            type=str(event["type"]),
            object_type=str(obj.get("object", "")),
            object_id=str(obj["id"]),
            charge_id=_id_of(obj.get("charge")) if obj.get("object") == "dispute" else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InvalidRequest(
            "The signed body is not a Stripe event.", code="event_invalid"
        ) from None


def _charge_state(charge: dict[str, Any]) -> ChargeState:
    intent = charge.get("payment_intent")
    payment_id = _field(charge.get("metadata"), "payment_id") or (
        _field(_field(intent, "metadata"), "payment_id") if isinstance(intent, dict) else None
    )
    return ChargeState(
        id=str(charge["id"]),
        payment_intent=_id_of(intent),
        payment_id=payment_id,
        amount_minor=int(charge["amount"]),
        amount_refunded_minor=int(charge.get("amount_refunded") or 0),
        disputed=bool(charge.get("disputed")),
    )


def _outcome(intent: dict[str, Any]) -> ChargeOutcome:
    next_action = intent.get("next_action")
    return ChargeOutcome(
        status=str(intent["status"]),
        payment_intent_id=str(intent["id"]),
        charge_id=_id_of(intent.get("latest_charge")),
        next_action=str(_field(next_action, "type")) if next_action else None,
        payment_id=_field(intent.get("metadata"), "payment_id"),
        client_secret=intent.get("client_secret") if next_action else None,
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
        amount_refunded=format_minor(
            int(_field(charge, "amount_refunded") or 0), str(charge["currency"])
        ),
    )


__all__ = [
    "STRIPE_API_VERSION",
    "ChargeOutcome",
    "ChargePage",
    "ChargeState",
    "ChargeSummary",
    "StripeEventRef",
    "StripeGateway",
    "TransientStripeError",
    "translate_error",
    "verify_stripe_event",
]
