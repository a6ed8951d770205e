"""Captures and voids with Redis faked by fakeredis and Stripe faked at the gateway boundary:
exactly one capture a request, reconciled before any retry, "unknown" while Stripe cannot be
asked, an authorization released by Stripe ends canceled."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest

from shared.errors import InvalidRequest
from shared.payments.payment_records import PaymentRecord
from shared.payments.states import CaptureStatus, Status
from shared.settings.service_settings import Settings
from shared.store.capture_store import AsyncCaptureStore, CaptureStore, capture_task_id
from shared.store.keys import CAPTURES_PENDING, CAPTURES_UNKNOWN, record_key
from shared.stripe.budget import StripeBudget
from shared.stripe.outcomes import ChargeOutcome, TransientStripeError
from tests.worker.conftest import seed_record
from worker.attempts import Done, RetryLater
from worker.capture_attempts import CaptureProcessor

PAY = "pay_" + "e" * 24
SETTINGS = Settings(environment="test", charge_max_retries=2)
AUTHORIZED = 4299


@dataclass
class FakeIntent:
    """One PaymentIntent at Stripe, authorized: its captures and cancels, a saved answer per
    idempotency key (as Stripe replays one), faults to inject."""

    status: str = "requires_capture"
    received: int = 0
    reason: str | None = None
    writes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    saved: dict[str, ChargeOutcome] = field(default_factory=dict)
    fail_write: list[Exception] = field(default_factory=list)
    fail_retrieve: list[Exception] = field(default_factory=list)
    lose_answer_once: bool = False

    def outcome(self) -> ChargeOutcome:
        return ChargeOutcome(
            self.status,
            "pi_1",
            "ch_1",
            payment_id=PAY,
            capture_method="manual",
            amount_received=self.received,
            cancellation_reason=self.reason,
        )

    def _write(self, kind: str, params: dict[str, Any]) -> ChargeOutcome:
        if self.fail_write:
            raise self.fail_write.pop(0)
        key = params["idempotency_key"]
        if key not in self.saved:
            if self.status != "requires_capture":
                raise InvalidRequest("unexpected state", code="payment_intent_unexpected_state")
            self.writes.append((kind, params))
            if kind == "capture":
                self.status = "succeeded"
                self.received = params["amount_minor"] or AUTHORIZED
            else:
                self.status, self.reason = "canceled", None
            self.saved[key] = self.outcome()
        if self.lose_answer_once:
            self.lose_answer_once = False
            raise TransientStripeError("connection reset after the request was sent")
        return self.saved[key]

    def capture_payment_intent(self, **params: Any) -> ChargeOutcome:
        return self._write("capture", params)

    def cancel_payment_intent(self, **params: Any) -> ChargeOutcome:
        return self._write("cancel", params)

    def retrieve_payment_intent(self, *, payment_intent_id: str) -> ChargeOutcome:
        if self.fail_retrieve:
            raise self.fail_retrieve.pop(0)
        return self.outcome()


@pytest.fixture
def intent() -> FakeIntent:
    return FakeIntent()


@pytest.fixture
def store(redis: fakeredis.FakeRedis) -> CaptureStore:
    return CaptureStore(redis, SETTINGS)


@pytest.fixture
def processor(store: CaptureStore, intent: FakeIntent) -> CaptureProcessor:
    return CaptureProcessor(store, intent, SETTINGS, StripeBudget.off())  # type: ignore[arg-type]


def ask(server: fakeredis.FakeServer, action: str, amount: int | None = None) -> None:
    """What POST /payments/{id}/capture (or cancel) writes."""
    api = AsyncCaptureStore(fakeredis.FakeAsyncRedis(server=server), SETTINGS)
    asked = f"{action}:{amount or 'all'}" if action == "capture" else action
    asyncio.run(api.ask(payment_id=PAY, action=action, ask=asked, amount_minor=amount,
                        message=b"{}"))  # fmt: skip


@pytest.fixture
def authorized(redis: fakeredis.FakeRedis) -> None:
    seed_record(redis, PAY, Status.REQUIRES_CAPTURE, payment_intent="pi_1", charge="ch_1",
                capture_method="manual", client="c")  # fmt: skip


def record(redis: fakeredis.FakeRedis) -> PaymentRecord:
    return PaymentRecord.from_redis(redis.hgetall(record_key(PAY)))


@pytest.mark.usefixtures("authorized")
def test_a_partial_capture_takes_what_was_asked_and_the_payment_succeeds(
    server: fakeredis.FakeServer,
    redis: fakeredis.FakeRedis,
    processor: CaptureProcessor,
    intent: FakeIntent,
) -> None:
    ask(server, "capture", 3000)

    assert processor.process(PAY) == Done(CaptureStatus.SUCCEEDED)

    (kind, params), = intent.writes  # fmt: skip
    assert (kind, params["amount_minor"], params["idempotency_key"]) == (
        "capture", 3000, f"{PAY}:capture")  # fmt: skip
    payment = record(redis)
    assert (payment.status, payment.capture_status) == (Status.SUCCEEDED, CaptureStatus.SUCCEEDED)
    assert (payment.amount_captured_minor, payment.charged_minor) == (3000, 3000)
    assert payment.captured_at is not None


@pytest.mark.usefixtures("authorized")
def test_a_lost_capture_answer_is_reconciled_once_and_never_captured_twice(
    server: fakeredis.FakeServer,
    redis: fakeredis.FakeRedis,
    processor: CaptureProcessor,
    intent: FakeIntent,
) -> None:
    ask(server, "capture")
    intent.lose_answer_once = True

    first = processor.process(PAY)
    retried = processor.process(PAY)

    assert isinstance(first, RetryLater)
    assert retried == Done(CaptureStatus.SUCCEEDED)
    assert len(intent.writes) == 1  # the retry found the capture at Stripe: no second write
    assert record(redis).amount_captured_minor == AUTHORIZED


@pytest.mark.usefixtures("authorized")
def test_a_void_releases_the_authorization_and_captures_nothing(
    server: fakeredis.FakeServer,
    redis: fakeredis.FakeRedis,
    processor: CaptureProcessor,
    intent: FakeIntent,
) -> None:
    ask(server, "void")

    assert processor.process(PAY) == Done(CaptureStatus.SUCCEEDED)

    (kind, params), = intent.writes  # fmt: skip
    assert (kind, params["idempotency_key"]) == ("cancel", f"{PAY}:void")
    payment = record(redis)
    assert (payment.status, payment.amount_captured_minor) == (Status.CANCELED, None)
    assert payment.canceled_at is not None


@pytest.mark.usefixtures("authorized")
def test_a_capture_after_stripe_released_the_authorization_fails_and_the_payment_is_canceled(
    server: fakeredis.FakeServer,
    redis: fakeredis.FakeRedis,
    processor: CaptureProcessor,
    intent: FakeIntent,
) -> None:
    ask(server, "capture")
    intent.status, intent.reason = "canceled", "automatic"

    assert processor.process(PAY) == Done(CaptureStatus.FAILED)

    payment = record(redis)
    assert (payment.status, payment.cancellation_reason) == (Status.CANCELED, "automatic")
    assert payment.capture_error is not None
    assert payment.capture_error["code"] == "authorization_released"
    assert intent.writes == []


@pytest.mark.usefixtures("authorized")
def test_an_unreachable_stripe_leaves_the_capture_unknown_until_the_reconciler_knows(
    server: fakeredis.FakeServer,
    redis: fakeredis.FakeRedis,
    processor: CaptureProcessor,
    intent: FakeIntent,
) -> None:
    ask(server, "capture")
    down = TransientStripeError("connection to Stripe failed")
    intent.lose_answer_once = True  # the capture happened, its answer lost
    intent.fail_retrieve = [down] * 3

    results = [processor.process(PAY) for _ in range(3)]

    assert isinstance(results[0], RetryLater)
    assert results[-1] == Done(CaptureStatus.UNKNOWN)
    payment = record(redis)
    assert (payment.status, payment.capture_status) == (
        Status.REQUIRES_CAPTURE, CaptureStatus.UNKNOWN)  # fmt: skip
    assert redis.zscore(CAPTURES_UNKNOWN, PAY) is not None

    redis.zadd(CAPTURES_UNKNOWN, {PAY: 0})  # due now
    assert processor.reconcile_round()["settled"] == 1

    payment = record(redis)
    assert (payment.status, payment.capture_status) == (Status.SUCCEEDED, CaptureStatus.SUCCEEDED)
    assert len(intent.writes) == 1
    assert redis.zscore(CAPTURES_UNKNOWN, PAY) is None


@pytest.mark.usefixtures("authorized")
def test_retries_run_out_with_nothing_at_stripe_fail_the_capture_and_keep_the_authorization(
    server: fakeredis.FakeServer,
    redis: fakeredis.FakeRedis,
    processor: CaptureProcessor,
    intent: FakeIntent,
) -> None:
    ask(server, "capture")
    intent.fail_write = [TransientStripeError("Stripe answered (500)", http_status=500)] * 3

    results = [processor.process(PAY) for _ in range(3)]

    assert results[-1] == Done(CaptureStatus.FAILED)
    payment = record(redis)
    assert (payment.status, payment.capture_status) == (
        Status.REQUIRES_CAPTURE, CaptureStatus.FAILED)  # fmt: skip
    assert payment.capture_error is not None
    assert payment.capture_error["code"] == "stripe_unavailable"
    assert intent.writes == []

    ask(server, "capture")  # asked again: a new request, with a key of its own
    assert processor.process(PAY) == Done(CaptureStatus.SUCCEEDED)
    assert intent.writes[0][1]["idempotency_key"] == f"{PAY}:capture:2"


def test_a_settled_capture_is_not_attempted_again(
    redis: fakeredis.FakeRedis, processor: CaptureProcessor, intent: FakeIntent
) -> None:
    seed_record(redis, PAY, Status.SUCCEEDED, payment_intent="pi_1", capture_method="manual",
                capture_action="capture", capture_status="succeeded")  # fmt: skip

    assert processor.process(PAY) == Done(None)
    assert intent.writes == []


@pytest.mark.usefixtures("authorized")
def test_a_capture_whose_message_was_lost_is_pushed_again_once_the_queue_moved_past_it(
    server: fakeredis.FakeServer, redis: fakeredis.FakeRedis, store: CaptureStore
) -> None:
    ask(server, "capture")
    redis.delete(SETTINGS.queue_name)  # the message lost (a failover between pop and unacked)
    later = time.time() + SETTINGS.sweep_stale_seconds + 1

    held_elsewhere = store.requeue_stale(
        queue_oldest_ms=-1, reserved={capture_task_id(PAY)}, now=later
    )
    still_queued = store.requeue_stale(queue_oldest_ms=0, reserved=set(), now=later + 3600)
    lost = store.requeue_stale(queue_oldest_ms=-1, reserved=set(), now=later + 7200)

    assert (held_elsewhere, still_queued, lost) == ([], [], [PAY])
    (message,) = [json.loads(m) for m in redis.lrange(SETTINGS.queue_name, 0, -1)]
    assert (message["headers"]["task"], message["headers"]["id"]) == (
        "payments.capture", capture_task_id(PAY))  # fmt: skip


@pytest.mark.usefixtures("authorized")
def test_a_settled_capture_leaves_the_recovery_sweep(
    server: fakeredis.FakeServer,
    redis: fakeredis.FakeRedis,
    store: CaptureStore,
    processor: CaptureProcessor,
) -> None:
    ask(server, "capture")
    processor.process(PAY)

    assert redis.zscore(CAPTURES_PENDING, PAY) is None
    assert store.requeue_stale(queue_oldest_ms=-1, reserved=set(), now=time.time() + 1e6) == []
