"""What the tests share, in one plain module (conftest modules hold fixtures only).

- Keys: the one client key every test's API accepts, the emulator's key, and the Stripe key the
  integration stacks give the service (made per run, so a log that shows it is caught).
- API unit tests: a request body, a fake Stripe charge list, an ASGI client for an app, a fake
  worker that records an outcome the way a real one does.
- Integration tests: the emulator seen directly (``StripeAdmin``), ``pay``/``final`` as a client
  calls them, and ``wait_until`` for every poll (each one has a deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI

from devtools.demo import create_test_customer
from shared.settings.api_clients import legacy_name
from shared.settings.service_settings import EMULATOR_API_KEY
from shared.store.keys import CLIENT_QUEUES, EVENTS_CHANNEL, client_queue, record_key
from shared.stripe.objects import ChargePage

T = TypeVar("T")

CLIENT_KEY = "test-client-key"
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
# The key the tests use to set up the emulator and read what it charged.
STRIPE_KEY = EMULATOR_API_KEY
# The key the service is given: looks like a real one, made per run; logs must never show it.
SERVICE_STRIPE_KEY = "sk_test_" + secrets.token_hex(16)
QUEUE = "payments"  # QUEUE_NAME: refunds and Stripe events; each client's charges in its own
# The charge queue of CLIENT_KEY's client (an API_KEYS entry, named by its digest).
CLIENT_QUEUE = client_queue(QUEUE, legacy_name(hashlib.sha256(CLIENT_KEY.encode()).digest()))


async def queued_charges(redis: Any) -> list[bytes]:
    """Every charge message waiting, whichever client's queue holds it."""
    names = sorted(m.decode() for m in await redis.smembers(CLIENT_QUEUES))
    return [message for name in names for message in await redis.lrange(name, 0, -1)]


def wait_until(condition: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll ``condition`` until it returns something other than None/False, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)


# --- API unit tests --------------------------------------------------------------------------


# Every field that takes a time (expires_at, created[gte], created[lt]) takes these RFC 3339
# date-times, as the instant shown (iso_from_ms's form), and refuses the others: all of them
# around 2026-12-31, so that one clock (RFC3339_NOW) puts each one less than a day ahead.
RFC3339_NOW = 1_798_718_400.0  # 2026-12-31T12:00:00Z
RFC3339_ACCEPTED = [
    ("2026-12-31T16:01:00Z", "2026-12-31T16:01:00.000Z"),
    ("2026-12-31t16:01:00z", "2026-12-31T16:01:00.000Z"),  # lower-case separators
    ("2026-12-31T17:01:00.25+01:00", "2026-12-31T16:01:00.250Z"),
    ("2026-12-31T16:01:00.123999-00:00", "2026-12-31T16:01:00.123Z"),  # past the ms: dropped
    ("2026-12-31T23:59:60Z", "2027-01-01T00:00:00.000Z"),  # a leap second: the next second
    ("2027-01-01T08:59:60.5+09:00", "2027-01-01T00:00:00.500Z"),  # the same one, at +09:00
]
RFC3339_REFUSED = [
    "20261231T160100Z",  # ISO 8601's basic format
    "2026-W53-4T16:01:00Z",  # a week date
    "2026-12-31T16:01:00+00:00:00.5",  # an offset with seconds
    "2026-12-31T16:01:00+0000",
    "2026-12-31 16:01:00Z",  # a space for the T
    "2026-12-31T16:01Z",  # no seconds
    "2026-12-31T16:01:00,5Z",
    "2026-12-31T16:01:00",  # no offset
    "2026-12-31T16:01:60Z",  # second 60 where no leap second can be
    "2026-12-30T23:59:60Z",  # not a month's last day
    "2026-12-31T24:00:00Z",
    "2026-12-31T16:01:0\u0660Z",  # an Arabic-Indic zero
]


def payment(**overrides: Any) -> dict[str, Any]:
    """A valid POST /payments body, with ``overrides``."""
    body: dict[str, Any] = {"account_id": "cus_Abc123", "amount": "42.99"}
    body.update(overrides)
    return body


class FakeListGateway:
    """Stands in for Stripe's charge list at the gateway boundary."""

    def __init__(self) -> None:
        self.pages: dict[str, ChargePage] = {}
        self.error: Exception | None = None

    async def list_charges(
        self, *, customer: str, limit: int, starting_after: str | None
    ) -> ChargePage:
        if self.error is not None:
            raise self.error
        return self.pages[customer]


@contextlib.asynccontextmanager
async def app_client(
    app: FastAPI,
    *,
    gateway: FakeListGateway | None = None,
    raise_app_exceptions: bool = True,
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``app`` over ASGI, its lifespan run around it. With
    ``raise_app_exceptions=False`` an unexpected error is the 500 the app rendered, as a server
    answers it, not an exception in the client."""
    async with app.router.lifespan_context(app):
        if gateway is not None:
            app.state.gateway = gateway
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def fake_worker_records(redis: Any, fields: Mapping[str, str]) -> str:
    """Do what a worker does with the next queued charge: record ``fields`` on the payment and
    publish the event that wakes waiting requests. Returns the payment id."""
    async with asyncio.timeout(5):  # the charge is queued by a request running alongside
        while not await queued_charges(redis):
            await asyncio.sleep(0.01)
    (raw,) = await queued_charges(redis)
    payment_id: str = json.loads(raw)["headers"]["id"]
    await redis.hset(record_key(payment_id), mapping=dict(fields))
    await redis.publish(EVENTS_CHANNEL, payment_id)
    return payment_id


# --- integration tests -----------------------------------------------------------------------


@dataclass
class StripeAdmin:
    """Direct HTTP to the emulator, to set up customers and to see what was really charged."""

    http: httpx.Client

    def customer(self, card: str | None = "pm_card_visa") -> str:
        if card is not None:
            return create_test_customer(self.http, card)
        customer = self.http.post("/v1/customers", data={"email": "t@example.com"}).json()
        return str(customer["id"])

    def charges(self, customer: str) -> list[dict[str, Any]]:
        page = self.http.get("/v1/charges", params={"customer": customer, "limit": 100})
        page.raise_for_status()
        data: list[dict[str, Any]] = page.json()["data"]
        return data

    def payment_intents(self, customer: str) -> list[dict[str, Any]]:
        """Every PaymentIntent of the customer, charged or not, newest first."""
        page = self.http.get("/v1/payment_intents", params={"customer": customer, "limit": 100})
        page.raise_for_status()
        data: list[dict[str, Any]] = page.json()["data"]
        return data


def stripe_admin_http(base_url: str) -> httpx.Client:
    """An HTTP client for the emulator itself, with the emulator's key."""
    return httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {STRIPE_KEY}"}, timeout=30
    )


def pay(
    api: httpx.Client,
    customer: str,
    amount: str = "42.99",
    *,
    wait: int = 0,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST /payments as a client would."""
    return api.post(
        "/payments",
        json={"account_id": customer, "amount": amount},
        params={"wait": wait},
        headers=headers or {},
    )


def callback_secret(api: httpx.Client) -> str:
    """The secret the client of ``api``'s key has its callbacks signed with, read as a client
    reads it (GET /clients/me/callback-secret)."""
    answer = api.get("/clients/me/callback-secret")
    answer.raise_for_status()
    secret: str = answer.json()["secret"]
    return secret


def final(api: httpx.Client, payment_id: str, timeout: float = 180) -> dict[str, Any]:
    """Poll a payment until its status is final."""

    def outcome() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/payments/{payment_id}").json()
        return body if body["status"] not in ("queued", "processing") else None

    return wait_until(outcome, timeout=timeout, what=f"{payment_id} final")


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON lines of a process's log (Celery's start-up banner is not JSON)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# --- payment lifecycle -----------------------------------------------------------------------

WEBHOOK_SECRET = "whsec_test_" + secrets.token_hex(8)


def stripe_signature(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header as Stripe (and the emulator) makes it."""
    import hashlib
    import hmac

    at = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), b"%d.%s" % (at, payload), hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def stripe_event(event_type: str, obj: dict[str, Any], event_id: str | None = None) -> bytes:
    """A Stripe event's body about ``obj``."""
    return json.dumps(
        {
            "id": event_id or "evt_" + secrets.token_hex(12),
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "data": {"object": obj},
        }
    ).encode()
