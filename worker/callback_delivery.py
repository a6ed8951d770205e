"""Sending one callback: the logic behind the ``payments.callback`` task (queue ``callbacks``).

The rules:
1. At least once. A callback is POSTed until the endpoint answers 2xx: a timeout (at most
   CALLBACK_TIMEOUT_SECONDS), a connection error or any other status is retried with
   exponential backoff and jitter for about a day (CALLBACK_MAX_ATTEMPTS), then kept as a
   dead letter that ``python -m worker.dead_letters`` lists and replays. ``webhook-id`` is
   the event's, identical on every attempt, for the receiver's dedupe. A message lost
   between kombu's pop and its unacked entry is pushed again by the callbacks' recovery
   sweep (shared.store.callback_store): each attempt marks its start, and its outcome (delivered,
   skipped, held for a retry, dead letter) takes the callback out of the sweep's set.
2. Signed (Standard Webhooks): ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``,
   one ``v1,`` signature per CALLBACK_SIGNING_SECRETS secret (the ``standardwebhooks`` package),
   or per secret of the payment's client when API_CLIENTS gives it its own
   (``callback_signing_secrets``).
3. Never towards our own network: the URL's rules again (shared.callbacks.events), then the host is
   resolved here and every address checked, and the request goes to the address that was
   checked (TLS still verified against the host name), so a name cannot be re-pointed between
   the check and the connection. Response bodies are never read or stored.
4. A failing receiver never affects payments: callbacks have their own queue, and an attempt
   waiting for its time waits in Redis (``payments:callback_retries``), not in a worker.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import structlog

from shared.backoff import backoff
from shared.callbacks.events import callback_message, event_body, payment_data, refund_data
from shared.callbacks.signing import client_signing_secrets, sign, signing_secrets
from shared.callbacks.url_rules import address_refused, check_callback_url
from shared.errors import CallbackUrlRefused
from shared.settings.service_settings import Settings
from shared.store.callback_store import CallbackStore
from shared.store.lifecycle_store import LifecycleStore
from shared.store.refund_store import RefundStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Callback:
    """One attempt of one event, as its task message carries it."""

    event_id: str
    event_type: str
    payment_id: str
    refund_id: str
    occurred_ms: int
    attempt: int


class Refused(Exception):
    """The endpoint is not one callbacks may reach (SSRF rules)."""


def resolve_public(host: str, port: int, allow_private: bool) -> str:
    """An address of ``host`` to connect to, every resolved address having been checked."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host}: {exc}") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not allow_private and any(address_refused(a) for a in addresses):
        raise Refused(f"{host} resolves to an address that is not on the public internet")
    return addresses[0]


class CallbackSender:
    def __init__(
        self,
        store: CallbackStore,
        payments: LifecycleStore,
        refunds: RefundStore,
        settings: Settings,
        http: httpx.Client | None = None,
        resolve: Any = resolve_public,
    ) -> None:
        self._store = store
        self._payments = payments
        self._refunds = refunds
        self._settings = settings
        self._http = http or httpx.Client(follow_redirects=False)
        self._resolve = resolve
        self._secrets = signing_secrets(settings)
        self._client_secrets = client_signing_secrets(settings)

    def send(self, callback: Callback) -> str:
        """One attempt; returns its outcome (delivered, retry, dead_lettered, skipped)."""
        bound = log.bind(event_id=callback.event_id, event_type=callback.event_type,
                         payment_id=callback.payment_id, attempt=callback.attempt)  # fmt: skip
        self._store.attempt_started(callback.event_id)
        payment = self._payments.get(callback.payment_id)
        if payment is None or not payment.callback_url:
            bound.info("callback.skipped", reason="no payment or no endpoint")
            self._store.settle(callback.event_id, "skipped")
            return "skipped"
        if callback.refund_id:
            refund = self._refunds.get(callback.refund_id)
            if refund is None:
                self._store.settle(callback.event_id, "skipped")
                return "skipped"
            data = refund_data(refund)
        else:
            data = payment_data(payment)
        body = orjson.dumps(
            event_body(callback.event_id, callback.event_type, callback.occurred_ms, data)
        ).decode()
        secrets = self._client_secrets.get(payment.client or "", self._secrets)
        if not secrets:  # never an unsigned callback: kept until a secret is configured
            bound.warning("callback.unsigned", reason="CALLBACK_SIGNING_SECRETS is empty")
            self._dead_letter(callback, payment.callback_url, "CALLBACK_SIGNING_SECRETS unset")
            return "dead_lettered"
        try:
            status = self._post(payment.callback_url, callback.event_id, body, secrets)
        except (CallbackUrlRefused, Refused, httpx.InvalidURL) as exc:
            # InvalidURL: an endpoint no request can be made for (a URL kept before the accept
            # rules refused it); no retry would ever send it.
            bound.warning("callback.refused", reason=str(exc))
            self._store.count("refused")
            self._dead_letter(callback, payment.callback_url, f"refused: {exc}")
            return "dead_lettered"
        except (httpx.HTTPError, OSError) as exc:
            return self._failed(callback, payment.callback_url, f"{type(exc).__name__}", bound)
        if 200 <= status < 300:
            bound.info("callback.delivered", status=status)
            self._store.settle(callback.event_id, "delivered")
            return "delivered"
        return self._failed(callback, payment.callback_url, f"HTTP {status}", bound)

    def _post(self, url: str, event_id: str, body: str, secrets: tuple[str, ...]) -> int:
        scheme, host, port = check_callback_url(url, self._settings)
        address = self._resolve(host, port, self._settings.callback_allow_private_networks)
        at = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "user-agent": "payments-callbacks/1",
            "webhook-id": event_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": sign(secrets, event_id, at, body),
        }
        # To the address checked, the Host header and TLS name still the URL's.
        target = httpx.URL(url)
        headers["host"] = target.netloc.decode()
        pinned = target.copy_with(host=address)
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        with self._http.stream(
            "POST", pinned, content=body.encode(), headers=headers,
            timeout=self._settings.callback_timeout_seconds, extensions=extensions,
        ) as response:  # fmt: skip
            return response.status_code  # the body is never read

    def _failed(self, callback: Callback, url: str, reason: str, bound: Any) -> str:
        if callback.attempt >= self._settings.callback_max_attempts:
            bound.warning("callback.gave_up", reason=reason)
            self._dead_letter(callback, url, reason)
            return "dead_lettered"
        delay = self.backoff(callback.attempt)
        message = callback_message(
            self._settings, callback.event_type, callback.payment_id, callback.refund_id,
            attempt=callback.attempt + 1, occurred_ms=callback.occurred_ms,
        )  # fmt: skip
        self._store.retry_at(callback.event_id, message, time.time() + delay)
        bound.info("callback.retry", reason=reason, next_in=round(delay, 1))
        return "retry"

    def backoff(self, attempt: int) -> float:
        """BACKOFF x 2^(attempt-1), capped, with equal jitter (between half and all of it):
        25 attempts with the defaults span about a day."""
        return backoff(
            attempt - 1,
            base=self._settings.callback_retry_backoff_seconds,
            cap=self._settings.callback_retry_backoff_max_seconds,
            jitter="equal",
        )

    def _dead_letter(self, callback: Callback, url: str, reason: str) -> None:
        self._store.dead_letter(
            callback.event_id,
            {
                "event_type": callback.event_type,
                "payment_id": callback.payment_id,
                "refund_id": callback.refund_id,
                "occurred_ms": str(callback.occurred_ms),
                "attempts": str(callback.attempt),
                "endpoint": url,
                "reason": reason,
            },
        )


def replay_message(settings: Settings, fields: dict[str, str]) -> bytes:
    """A dead letter's first attempt again (a fresh retry budget, the same event id)."""
    return callback_message(
        settings, fields["event_type"], fields["payment_id"], fields.get("refund_id", ""),
        attempt=1, occurred_ms=int(fields.get("occurred_ms") or time.time() * 1000),
    )  # fmt: skip
