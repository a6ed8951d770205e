"""What the worker tests share: a fakeredis server, a record seeder that writes a payment as the
accept step leaves it, and a callback receiver behind an httpx.MockTransport."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

import fakeredis
import httpx
import pytest

from shared.callbacks.events import callback_message
from shared.payments.payment_records import new_record_fields
from shared.payments.states import Status
from shared.settings.service_settings import Settings
from shared.store.callback_store import CallbackStore
from shared.store.keys import CALLBACK_RETRIES, record_key
from shared.store.lifecycle_store import LifecycleStore
from shared.store.refund_store import RefundStore
from worker.callback_delivery import Callback, CallbackSender

# Where every name resolves for the senders below: the tests' DNS, a public address. The send-time
# refusal of private addresses is shown with the real resolver (test_callbacks.py).
PUBLIC_ADDRESS = "93.184.216.34"


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def redis(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


def seed_record(
    redis: fakeredis.FakeRedis,
    payment_id: str,
    status: Status | None = None,
    *,
    callback_url: str | None = None,
    account_id: str = "cus_A",
    amount_minor: int = 4299,
    payment_method: str | None = "pm_1",
    **fields: str,
) -> str:
    """Write a payment record as accepted (``queued``), or in ``status``; its id."""
    record: dict[str, str] = new_record_fields(
        payment_id=payment_id, account_id=account_id, amount_minor=amount_minor,
        currency="usd", payment_method=payment_method, idempotency_key=f"k-{payment_id}",
        fingerprint="f" * 64,
    )  # fmt: skip
    if status is not None:
        record["status"] = status.value
    if callback_url:
        record["callback_url"] = callback_url
    record.update(fields)
    redis.hset(record_key(payment_id), mapping=record)  # type: ignore[arg-type]
    return payment_id


class SeedPayment(Protocol):
    def __call__(
        self,
        payment_id: str,
        status: Status | None = None,
        *,
        callback_url: str | None = None,
        account_id: str = "cus_A",
        amount_minor: int = 4299,
        payment_method: str | None = "pm_1",
        **fields: str,
    ) -> str: ...


@pytest.fixture
def seed_payment(redis: fakeredis.FakeRedis) -> SeedPayment:
    """``seed_record`` on this test's Redis."""
    return functools.partial(seed_record, redis)


class Receiver:
    """A callback endpoint: answers the statuses it is given, in turn, then 200; keeps every
    request it was sent."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    @property
    def ids(self) -> list[str]:
        """The ``webhook-id`` of each request, in order."""
        return [request.headers["webhook-id"] for request in self.requests]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.statuses.pop(0) if self.statuses else 200, text="body")


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


def public_dns(host: str, port: int, allow_private: bool) -> str:
    return PUBLIC_ADDRESS


class MakeSender(Protocol):
    def __call__(
        self, settings: Settings, *, resolve: Callable[[str, int, bool], str] | None = ...
    ) -> CallbackSender: ...


@pytest.fixture
def make_sender(redis: fakeredis.FakeRedis, receiver: Receiver) -> MakeSender:
    """The workers' callback sender, posting to ``receiver``; every name resolves to a public
    address unless ``resolve=None`` keeps the real resolver."""

    def make(
        settings: Settings, *, resolve: Callable[[str, int, bool], str] | None = public_dns
    ) -> CallbackSender:
        extra: dict[str, Any] = {} if resolve is None else {"resolve": resolve}
        return CallbackSender(
            CallbackStore(redis, settings), LifecycleStore(redis, settings),
            RefundStore(redis, settings), settings,
            transport=httpx.MockTransport(receiver), **extra,
        )  # fmt: skip

    return make


class FileCallback(Protocol):
    def __call__(self, settings: Settings, callback: Callback) -> Callback: ...


@pytest.fixture
def file_callback(redis: fakeredis.FakeRedis) -> FileCallback:
    """File ``callback``'s message as the script that queues it does (the recovery sweep's
    record, which the event's lease checks an attempt against), the queue left as it was; the
    callback."""

    def file(settings: Settings, callback: Callback) -> Callback:
        message = callback_message(
            settings, callback.event_type, callback.payment_id, callback.refund_id,
            attempt=callback.attempt, occurred_ms=callback.occurred_ms,
        )  # fmt: skip
        redis.zadd(CALLBACK_RETRIES, {message: 0})
        assert CallbackStore(redis, settings).requeue_due(now=1) == 1  # files it, and queues it
        redis.lrem(settings.callback_queue, 1, message.decode())
        return callback

    return file
