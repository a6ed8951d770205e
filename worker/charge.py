"""Charging one payment: the logic behind the ``payments.charge`` task, testable without Celery.

Every Stripe write for a payment carries the same idempotency key (derived from our payment id),
and the payment method is resolved once and stored, so a retry or a redelivered message sends
Stripe exactly the same request and gets the first answer back instead of a second charge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import redis
import structlog

from shared.errors import (
    CardDeclined,
    PaymentServiceError,
    StripeUnavailable,
    UpstreamError,
)
from shared.records import (
    EVENTS_CHANNEL,
    PaymentRecord,
    Status,
    now_iso,
    record_key,
    stripe_idempotency_key,
)
from shared.stripe_gateway import ChargeOutcome, StripeGateway, TransientStripeError

log = structlog.get_logger(__name__)

# Moves a record to `processing` unless it is already final (then returns 0: nothing to do).
START_SCRIPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status == 'succeeded' or status == 'failed' or status == 'requires_action' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'processing', 'updated_at', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return 1
"""

# Writes a final outcome once, then tells waiting API requests (ARGV[1] = payment id).
FINISH_SCRIPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status == 'succeeded' or status == 'failed' or status == 'requires_action' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class RetryLater:
    """A transient failure: try again with the same key after ``countdown`` seconds (or the
    task's backoff when None)."""

    reason: str
    countdown: float | None = None


@dataclass(frozen=True, slots=True)
class Done:
    status: Status | None  # None: nothing to do (unknown, expired or already final)


class ChargeProcessor:
    def __init__(self, redis_client: redis.Redis, gateway: StripeGateway) -> None:
        self._redis = redis_client
        self._gateway = gateway
        self._start = redis_client.register_script(START_SCRIPT)
        self._finish = redis_client.register_script(FINISH_SCRIPT)

    def load(self, payment_id: str) -> PaymentRecord | None:
        raw: dict[bytes, bytes] = self._redis.hgetall(record_key(payment_id))  # type: ignore[assignment]
        return PaymentRecord.from_redis(raw) if raw else None

    def process(self, payment_id: str, *, last_attempt: bool) -> Done | RetryLater:
        bound = log.bind(payment_id=payment_id)
        started = self._start(keys=[record_key(payment_id)], args=[now_iso()])
        if started != 1:
            bound.info("charge.skipped", reason="unknown" if started == -1 else "already_final")
            return Done(None)
        record = self.load(payment_id)
        if record is None:  # expired between the two reads
            return Done(None)
        bound = bound.bind(idempotency_key=record.idempotency_key, attempt=record.attempts)
        try:
            outcome = self._charge(record)
        except TransientStripeError as exc:
            if last_attempt:
                bound.warning("charge.gave_up", reason=str(exc))
                return self._fail(
                    record,
                    StripeUnavailable(
                        "The payment processor could not be reached after "
                        f"{record.attempts} attempts; the payment was not charged.",
                        code="stripe_unavailable",
                    ),
                )
            bound.info("charge.retry", reason=str(exc), retry_after=exc.retry_after)
            return RetryLater(str(exc), exc.retry_after)
        except PaymentServiceError as exc:
            bound.info("charge.failed", code=exc.code, status=exc.status_code)
            return self._fail(record, exc)
        return self._record_outcome(record, outcome, bound)

    def _charge(self, record: PaymentRecord) -> ChargeOutcome:
        if record.payment_intent:
            # Stripe already has it (it was still processing): ask for its state.
            return self._gateway.retrieve_payment_intent(payment_intent_id=record.payment_intent)
        method = record.payment_method
        if method is None:
            method = self._gateway.default_payment_method(customer=record.account_id)
            # Stored so that every retry sends Stripe the very same parameters.
            self._redis.hset(record_key(record.id), "payment_method", method)
        return self._gateway.create_payment_intent(
            customer=record.account_id,
            amount_minor=record.amount_minor,
            currency=record.currency,
            payment_method=method,
            payment_id=record.id,
            idempotency_key=stripe_idempotency_key(record.id),
        )

    def _record_outcome(
        self, record: PaymentRecord, outcome: ChargeOutcome, bound: Any
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
                {
                    **ids,
                    "next_action": outcome.next_action or "use_stripe_sdk",
                    "error": orjson.dumps(error.to_dict()).decode(),
                    "error_status": str(error.status_code),
                },
            )
        if outcome.status == "processing":
            self._redis.hset(record_key(record.id), mapping=dict(ids.items()))
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
    ) -> Done:
        return self._finish_with(
            record,
            Status.FAILED,
            {
                **(extra or {}),
                "error": orjson.dumps(error.to_dict()).decode(),
                "error_status": str(error.status_code),
            },
        )

    def _finish_with(self, record: PaymentRecord, status: Status, fields: dict[str, str]) -> Done:
        args: list[str] = [record.id, "status", status.value, "updated_at", now_iso()]
        for name, value in fields.items():
            args += [name, value]
        self._finish(keys=[record_key(record.id), EVENTS_CHANNEL], args=args)
        return Done(status)
