"""Charging one payment: the logic behind the ``payments.charge`` task, testable without Celery.

Exactly once, whatever fails:
- every Stripe write for a payment carries the same idempotency key (derived from our payment
  id), and the payment method is resolved once and stored, so a retry or a redelivered message
  sends Stripe the very same request and gets the first answer back, not a second charge;
- a per-payment lease in Redis keeps a redelivered message from charging while the original is
  still running (a worker killed mid-charge loses its lease when it expires);
- when an earlier attempt's outcome was never recorded and Stripe may have forgotten its key
  (first attempt older than STRIPE_KEY_MEMORY_SECONDS), the payment is reconciled first: a
  PaymentIntent carrying our payment id is adopted instead of charging again.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson
import redis
import structlog
from celery.utils.time import get_exponential_backoff_interval

from shared.config import Settings
from shared.errors import (
    CardDeclined,
    PaymentServiceError,
    StripeUnavailable,
    UpstreamError,
)
from shared.metrics import OUTCOMES, StripeCallMetrics, outcome_field
from shared.rate_limit import RateLimitTimeout, SharedRateLimiter
from shared.records import (
    DEAD_LETTERS,
    EVENTS_CHANNEL,
    PENDING,
    PaymentRecord,
    Status,
    lock_key,
    now_iso,
    record_key,
    stripe_idempotency_key,
)
from shared.stripe_gateway import ChargeOutcome, StripeGateway, TransientStripeError

log = structlog.get_logger(__name__)

# Takes the payment's lease (KEYS[2]) and moves the record to `processing`, unless the record is
# gone (-1), already final (0) or leased by another worker (-2). {1, record}: go ahead.
START_SCRIPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status == 'succeeded' or status == 'failed' or status == 'requires_action' then return 0 end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return -2 end
redis.call('HSET', KEYS[1], 'status', 'processing', 'updated_at', ARGV[1])
redis.call('HSETNX', KEYS[1], 'first_attempt_at', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return {1, redis.call('HGETALL', KEYS[1])}
"""

# Writes a final outcome (fields ARGV[5..]) once, releases the lease, counts the outcome
# (ARGV[4], see shared.metrics), tells waiting API requests (ARGV[1] = id) and, when ARGV[2] is
# '1', files the payment as a dead letter (score ARGV[3]).
FINISH_SCRIPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status == 'succeeded' or status == 'failed' or status == 'requires_action' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('HINCRBY', KEYS[6], ARGV[4], 1)
if ARGV[2] == '1' then redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1]) end
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', KEYS[3], ARGV[1])
return 1
"""

# Releases the lease if it is still ours (a retry is about to be scheduled).
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

LEASE_BUSY_RETRY_SECONDS = 5.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Not done yet: run the task again after ``countdown`` seconds."""

    reason: str
    countdown: float


@dataclass(frozen=True, slots=True)
class Done:
    status: Status | None  # None: nothing to do (unknown, expired or already final)


class ChargeProcessor:
    def __init__(
        self,
        redis_client: redis.Redis,
        gateway: StripeGateway,
        settings: Settings,
        limiter: SharedRateLimiter | None = None,
        metrics: StripeCallMetrics | None = None,
    ) -> None:
        self._redis = redis_client
        self._gateway = gateway
        self._settings = settings
        self._limiter = limiter or SharedRateLimiter(redis_client, 0)
        self._metrics = metrics
        # The lease outlives the longest charge, and expires before the message is redelivered.
        self._lease_ms = int((2 * settings.stripe_timeout_seconds + 10) * 1000)
        self._start = redis_client.register_script(START_SCRIPT)
        self._finish = redis_client.register_script(FINISH_SCRIPT)
        self._release = redis_client.register_script(RELEASE_SCRIPT)

    def load(self, payment_id: str) -> PaymentRecord | None:
        raw: dict[bytes, bytes] = self._redis.hgetall(record_key(payment_id))  # type: ignore[assignment]
        return PaymentRecord.from_redis(raw) if raw else None

    def process(self, payment_id: str) -> Done | RetryLater:
        bound = log.bind(payment_id=payment_id)
        token = secrets.token_hex(8)
        started = self._start(
            keys=[record_key(payment_id), lock_key(payment_id)],
            args=[now_iso(), token, self._lease_ms, int(time.time())],
        )
        if started == -2:
            bound.info("charge.leased_elsewhere")
            return RetryLater("another worker holds this payment", LEASE_BUSY_RETRY_SECONDS)
        if not isinstance(started, list):
            bound.info("charge.skipped", reason="unknown" if started == -1 else "already_final")
            return Done(None)
        flat = started[1]
        record = PaymentRecord.from_redis(dict(zip(flat[::2], flat[1::2], strict=True)))
        bound = bound.bind(idempotency_key=record.idempotency_key, attempt=record.attempts)
        bound.info("charge.started")
        timings: list[tuple[str, float, str]] = []
        try:
            return self._attempt(record, bound, token, timings)
        finally:
            if timings and self._metrics is not None:
                try:
                    self._metrics.record_many(timings)
                except redis.RedisError:
                    log.debug("metrics.unrecorded", payment_id=payment_id)

    def _attempt(
        self, record: PaymentRecord, bound: Any, token: str, timings: list[tuple[str, float, str]]
    ) -> Done | RetryLater:
        payment_id = record.id
        try:
            outcome = self._charge(record, timings)
        except (TransientStripeError, RateLimitTimeout) as exc:
            retry_after = exc.retry_after if isinstance(exc, TransientStripeError) else None
            if record.attempts > self._settings.charge_max_retries:
                bound.warning("charge.gave_up", reason=str(exc))
                return self._fail(
                    record,
                    StripeUnavailable(
                        "The payment processor could not be reached after "
                        f"{record.attempts} attempts; the payment was not charged. "
                        "Retry later with a new Idempotency-Key.",
                        code="stripe_unavailable",
                    ),
                    dead_letter=True,
                )
            countdown = self._backoff(record.attempts, retry_after)
            bound.info("charge.retry", reason=str(exc), countdown=round(countdown, 2))
            self._release(keys=[lock_key(payment_id)], args=[token])
            return RetryLater(str(exc), countdown)
        except PaymentServiceError as exc:
            bound.info("charge.failed", code=exc.code, status=exc.status_code)
            return self._fail(record, exc)
        return self._record_outcome(record, outcome, bound, token)

    def _beyond_stripes_memory(self, record: PaymentRecord) -> bool:
        first = record.first_attempt_at or 0
        return time.time() - first >= self._settings.stripe_key_memory_seconds

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        """Exponential with full jitter (Celery's own), or Stripe's Retry-After, capped."""
        cap = self._settings.charge_retry_backoff_max_seconds
        if retry_after is not None:
            return min(retry_after, cap)
        jittered = get_exponential_backoff_interval(
            factor=1, retries=attempts - 1, maximum=2**31, full_jitter=True
        )
        return float(min(cap, jittered * self._settings.charge_retry_backoff_seconds))

    def _stripe(
        self, timings: list[tuple[str, float, str]], call: str, request: Callable[[], T]
    ) -> T:
        """One Stripe call: within the shared rate budget (waiting for it, but not past the
        lease: better to retry the task later), timed by outcome into ``timings`` (written to
        Redis once per attempt)."""
        self._limiter.acquire(max_wait=self._settings.stripe_timeout_seconds / 2)
        started = time.perf_counter()
        outcome = "ok"
        try:
            return request()
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            timings.append((call, time.perf_counter() - started, outcome))

    def _charge(
        self, record: PaymentRecord, timings: list[tuple[str, float, str]]
    ) -> ChargeOutcome:
        if record.payment_intent:
            # Stripe already has it (it was still processing): ask for its state.
            intent_id = record.payment_intent
            return self._stripe(
                timings,
                "payment_intents.retrieve",
                lambda: self._gateway.retrieve_payment_intent(payment_intent_id=intent_id),
            )
        if record.attempts > 1 and self._beyond_stripes_memory(record):
            # An earlier attempt may have charged without our hearing the answer, and Stripe
            # may no longer remember its idempotency key: look before charging again.
            found = self._stripe(
                timings,
                "charges.list",
                lambda: self._gateway.find_payment_intent(
                    customer=record.account_id,
                    payment_id=record.id,
                    created_after=_epoch(record.created_at) - 60,
                ),
            )
            if found is not None:
                log.info(
                    "charge.reconciled",
                    payment_id=record.id,
                    payment_intent=found.payment_intent_id,
                )
                return found
        method = record.payment_method
        if method is None:
            method = self._stripe(
                timings,
                "customers.retrieve",
                lambda: self._gateway.default_payment_method(customer=record.account_id),
            )
            # Stored so that every retry sends Stripe the very same parameters.
            self._redis.hset(record_key(record.id), "payment_method", method)
        return self._stripe(
            timings,
            "payment_intents.create",
            lambda: self._gateway.create_payment_intent(
                customer=record.account_id,
                amount_minor=record.amount_minor,
                currency=record.currency,
                payment_method=method,
                payment_id=record.id,
                idempotency_key=stripe_idempotency_key(record.id),
            ),
        )

    def _record_outcome(
        self, record: PaymentRecord, outcome: ChargeOutcome, bound: Any, token: str
    ) -> Done | RetryLater:
        ids = {"payment_intent": outcome.payment_intent_id, "charge": outcome.charge_id or ""}
        if outcome.status == "succeeded":
            bound.info("charge.succeeded", payment_intent=outcome.payment_intent_id)
            return self._finish_with(record, Status.SUCCEEDED, ids)
        if outcome.status == "requires_action":
            bound.info("charge.requires_action", payment_intent=outcome.payment_intent_id)
            error = CardDeclined(
                "The card requires authentication by the customer (3-D Secure); "
                "the payment was not charged.",
                code="authentication_required",
            )
            return self._finish_with(
                record,
                Status.REQUIRES_ACTION,
                {**ids, "next_action": outcome.next_action or "use_stripe_sdk", **_error(error)},
            )
        if outcome.status == "processing":
            self._redis.hset(record_key(record.id), mapping=dict(ids.items()))
            self._release(keys=[lock_key(record.id)], args=[token])
            return RetryLater("payment intent still processing", 2.0)
        bound.warning("charge.unexpected_status", status=outcome.status)
        failure: PaymentServiceError = (
            CardDeclined("The payment was not completed.", code="payment_intent_" + outcome.status)
            if outcome.status in ("requires_payment_method", "canceled")
            else UpstreamError(f"Unexpected PaymentIntent status {outcome.status}.")
        )
        return self._fail(record, failure, ids)

    def _fail(
        self,
        record: PaymentRecord,
        error: PaymentServiceError,
        extra: dict[str, str] | None = None,
        *,
        dead_letter: bool = False,
    ) -> Done:
        fields = {**(extra or {}), **_error(error)}
        return self._finish_with(record, Status.FAILED, fields, dead_letter=dead_letter)

    def _finish_with(
        self,
        record: PaymentRecord,
        status: Status,
        fields: dict[str, str],
        *,
        dead_letter: bool = False,
    ) -> Done:
        now = now_iso()
        code = orjson.loads(fields["error"])["code"] if "error" in fields else None
        args: list[str | float] = [
            record.id,
            "1" if dead_letter else "0",
            _epoch(now),
            outcome_field(status.value, code),
            "status",
            status.value,
            "updated_at",
            now,
        ]
        for name, value in fields.items():
            args += [name, value]
        self._finish(
            keys=[
                record_key(record.id),
                lock_key(record.id),
                EVENTS_CHANNEL,
                DEAD_LETTERS,
                PENDING,
                OUTCOMES,
            ],
            args=args,
        )
        return Done(status)


def _error(error: PaymentServiceError) -> dict[str, str]:
    return {"error": orjson.dumps(error.to_dict()).decode(), "error_status": str(error.status_code)}


def _epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
