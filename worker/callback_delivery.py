"""Sending one callback: the logic behind the ``payments.callback`` task (queue ``callbacks``).

The rules:
1. At least once. A callback is POSTed until the endpoint answers 2xx: a deadline hit (the
   whole exchange within CALLBACK_TIMEOUT_SECONDS, ``worker.callback_http``), a connection
   error or any other status is retried with exponential backoff and jitter for about a day
   (CALLBACK_MAX_ATTEMPTS), then kept as a dead letter that ``python -m worker.dead_letters``
   lists and replays. ``webhook-id`` is the event's, identical on every attempt, for the
   receiver's dedupe. A message lost between kombu's pop and its unacked entry is pushed again
   by the callbacks' recovery sweep (shared.store.callback_store): each attempt marks its
   start, and its outcome (delivered, skipped, held for a retry, dead letter) takes the
   callback out of the sweep's set.
2. Standard Webhooks answers: ``410 Gone`` means the endpoint was removed: the callback is a
   dead letter at once (logged, counted ``gone``), never retried. ``429`` and ``503`` with
   ``Retry-After`` are retried no sooner than it says (at most a day).
3. One attempt per event at a time: an attempt holds the event's lease (Redis) and starts only
   for the message filed for it, so a redelivered message never runs beside a live attempt,
   and a message of an attempt already done with is dropped.
4. A bounded share of the worker: an attempt holds a slot (``worker.callback_slots``) for its
   client; with none free, it is deferred, and the task puts its message back for a moment.
5. Signed (Standard Webhooks): ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``,
   one ``v1,`` signature per secret of the payment's client (the ``standardwebhooks``
   package): its own ``callback_signing_secrets`` from API_CLIENTS, else derived from each
   CALLBACK_SIGNING_SECRETS secret and its name (shared.callbacks.signing), so that no client
   can verify, or forge, another's.
6. Only the public internet: the URL's rules again (shared.callbacks.url_rules), then the host
   is resolved here and every address checked, and the request goes to the address that was
   checked (TLS still verified against the host name), so a name cannot be re-pointed between
   the check and the connection. An endpoint refused, or one no request can be made for, is a
   dead letter. Response bodies are never read or stored.
"""

from __future__ import annotations

import random
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import structlog

from shared.backoff import backoff
from shared.callbacks.events import callback_message, event_body, payment_data, refund_data
from shared.callbacks.signing import CallbackSecrets, sign
from shared.callbacks.url_rules import address_refused, check_callback_url
from shared.errors import CallbackUrlRefused
from shared.payments.payment_records import PaymentRecord
from shared.settings.service_settings import Settings
from shared.store.callback_store import CallbackStore, Held
from shared.store.lifecycle_store import LifecycleStore
from shared.store.refund_store import RefundStore
from worker import callback_http
from worker.callback_http import DeadlineExceeded
from worker.callback_slots import CallbackSlots

log = structlog.get_logger(__name__)

# The longest Retry-After honoured: a receiver asking for more is tried again after a day.
RETRY_AFTER_MAX_SECONDS = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Callback:
    """One attempt of one event, as its task message carries it."""

    event_id: str
    event_type: str
    payment_id: str
    refund_id: str
    occurred_ms: int
    attempt: int

    @property
    def task_id(self) -> str:
        return f"{self.event_id}:{self.attempt}"


@dataclass(frozen=True, slots=True)
class Deferred:
    """The attempt did not begin (no free slot, or another attempt at the event is live): its
    message should come back in ``countdown`` seconds."""

    countdown: float
    reason: str


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


@dataclass(frozen=True, slots=True)
class _Attempt:
    callback: Callback
    url: str
    token: str
    bound: Any


class CallbackSender:
    def __init__(
        self,
        store: CallbackStore,
        payments: LifecycleStore,
        refunds: RefundStore,
        settings: Settings,
        transport: httpx.AsyncBaseTransport | None = None,
        resolve: Any = resolve_public,
        slots: CallbackSlots | None = None,
    ) -> None:
        self._store = store
        self._payments = payments
        self._refunds = refunds
        self._settings = settings
        self._transport = transport
        self._resolve = resolve
        self._secrets = CallbackSecrets(settings)
        self.slots = slots or CallbackSlots(settings.callback_slots, settings.callback_client_slots)

    def send(self, callback: Callback, *, token: str | None = None) -> str | Deferred:
        """One attempt, holding the event's lease under ``token`` (the task keeps the same one
        for a rerun after Redis came back; default: a fresh one); its outcome (delivered,
        retry, dead_lettered, skipped, duplicate), or Deferred when it could not begin."""
        token = token or uuid.uuid4().hex
        bound = log.bind(event_id=callback.event_id, event_type=callback.event_type,
                         payment_id=callback.payment_id, attempt=callback.attempt)  # fmt: skip
        payment = self._payments.get(callback.payment_id)
        if payment is None or not payment.callback_url:
            bound.info("callback.skipped", reason="no payment or no endpoint")
            self._store.settle(callback.event_id, "skipped")
            return "skipped"
        client = payment.client or ""
        if not self.slots.take(client):
            # Back to the queue, spread over a few seconds: a slot frees up within a deadline.
            wait = random.uniform(1.0, 1.0 + self._settings.callback_timeout_seconds / 5)  # noqa: S311
            bound.debug("callback.deferred", reason="no free slot", client=client)
            return Deferred(wait, "no free slot")
        try:
            lease = self._store.take_lease(callback.event_id, task_id=callback.task_id,
                                           token=token)  # fmt: skip
            if lease == "duplicate":
                bound.info("callback.duplicate")
                return "duplicate"
            if isinstance(lease, Held):
                bound.info("callback.deferred", reason="another attempt is live")
                return Deferred(lease.seconds + 1, "another attempt is live")
            return self._attempt(_Attempt(callback, payment.callback_url, token, bound), payment)
        finally:
            self.slots.give_back(client)

    def _attempt(self, at: _Attempt, payment: PaymentRecord) -> str:
        started = time.monotonic()
        callback = at.callback
        if callback.refund_id:
            refund = self._refunds.get(callback.refund_id)
            if refund is None:
                self._store.settle(callback.event_id, "skipped", token=at.token)
                return "skipped"
            data = refund_data(refund)
        else:
            data = payment_data(payment)
        body = orjson.dumps(
            event_body(callback.event_id, callback.event_type, callback.occurred_ms, data)
        ).decode()
        secrets = self._secrets.of(payment.client)
        if not secrets:  # never an unsigned callback: kept until a secret is configured
            at.bound.warning("callback.unsigned", reason="CALLBACK_SIGNING_SECRETS is empty")
            return self._dead_letter(at, "CALLBACK_SIGNING_SECRETS unset")
        try:
            answer = self._post(at.url, callback.event_id, body, secrets, started)
        except (CallbackUrlRefused, Refused, httpx.InvalidURL) as exc:
            # InvalidURL: an endpoint no request can be made for (a URL kept before the accept
            # rules refused it); no retry would ever send it.
            at.bound.warning("callback.refused", reason=str(exc))
            self._store.count("refused")
            return self._dead_letter(at, f"refused: {exc}")
        except DeadlineExceeded as exc:
            at.bound.warning("callback.deadline", reason=str(exc))
            self._store.count("deadline")
            return self._failed(at, f"deadline: {exc}")
        except (httpx.HTTPError, OSError) as exc:
            return self._failed(at, f"{type(exc).__name__}")
        status = answer.status
        if 200 <= status < 300:
            at.bound.info("callback.delivered", status=status)
            self._store.settle(callback.event_id, "delivered", token=at.token)
            return "delivered"
        if status == 410:  # Standard Webhooks: the endpoint is gone, stop sending to it
            at.bound.warning("callback.gone", endpoint_status=status)
            self._store.count("gone")
            return self._dead_letter(at, "gone: HTTP 410")
        wait = 0.0
        if status in (429, 503):
            asked = callback_http.retry_after_seconds(answer.retry_after, time.time())
            wait = min(asked, RETRY_AFTER_MAX_SECONDS)
        return self._failed(at, f"HTTP {status}", not_before=wait)

    def _post(
        self, url: str, event_id: str, body: str, secrets: tuple[str, ...], started: float
    ) -> callback_http.Answer:
        scheme, host, port = check_callback_url(url, self._settings)
        address = self._resolve(host, port, self._settings.callback_allow_private_networks)
        deadline = self._settings.callback_timeout_seconds
        left = deadline - (time.monotonic() - started)  # the lookup counts
        if left <= 0:
            raise DeadlineExceeded(f"no answer within {deadline:g} s")
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
        return callback_http.post(pinned, content=body.encode(), headers=headers,
                                  extensions=extensions, seconds=left,
                                  transport=self._transport)  # fmt: skip

    def _failed(self, at: _Attempt, reason: str, not_before: float = 0.0) -> str:
        callback = at.callback
        if callback.attempt >= self._settings.callback_max_attempts:
            at.bound.warning("callback.gave_up", reason=reason)
            return self._dead_letter(at, reason)
        delay = max(self.backoff(callback.attempt), not_before)
        message = callback_message(
            self._settings, callback.event_type, callback.payment_id, callback.refund_id,
            attempt=callback.attempt + 1, occurred_ms=callback.occurred_ms,
        )  # fmt: skip
        self._store.retry_at(callback.event_id, message, time.time() + delay, token=at.token)
        at.bound.info("callback.retry", reason=reason, next_in=round(delay, 1))
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

    def _dead_letter(self, at: _Attempt, reason: str) -> str:
        callback = at.callback
        self._store.dead_letter(
            callback.event_id,
            {
                "event_type": callback.event_type,
                "payment_id": callback.payment_id,
                "refund_id": callback.refund_id,
                "occurred_ms": str(callback.occurred_ms),
                "attempts": str(callback.attempt),
                "endpoint": at.url,
                "reason": reason,
            },
            token=at.token,
        )
        return "dead_lettered"


def replay_message(settings: Settings, fields: dict[str, str]) -> bytes:
    """A dead letter's first attempt again (a fresh retry budget, the same event id)."""
    return callback_message(
        settings, fields["event_type"], fields["payment_id"], fields.get("refund_id", ""),
        attempt=1, occurred_ms=int(fields.get("occurred_ms") or time.time() * 1000),
    )  # fmt: skip
