"""The accept path: claim the idempotency key, write the record and enqueue, in one Redis step."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from api.schemas import PaymentRequest
from shared.celery_message import charge_message
from shared.config import Settings
from shared.errors import (
    IdempotencyKeyMismatch,
    InvalidRequest,
    PaymentNotFound,
    ServiceUnavailable,
)
from shared.metrics import ACCEPTED
from shared.money import AmountError, parse_amount
from shared.records import (
    PENDING,
    RECORD_PREFIX,
    PaymentRecord,
    idempotency_key_slot,
    new_payment_id,
    new_record_fields,
    record_key,
    request_fingerprint,
)

# Claims KEYS[1] (idempotency slot) for ARGV[1] (payment id). If the key is new: writes the
# record KEYS[2] from the JSON object ARGV[8], pushes the task message ARGV[5] onto the queue
# list KEYS[3], files the payment in the pending index KEYS[4] (score ARGV[7]) and counts it in
# KEYS[5], all or nothing: {1}. If the key was claimed before: {0, existing record}. If the
# queue already holds ARGV[6] messages or more, nothing is written: {2} (backpressure).
# Single-node Redis: the existing record's key is built here from ARGV[2].
ACCEPT_SCRIPT = """
local existing = redis.call('GET', KEYS[1])
if existing then
  local record = redis.call('HGETALL', ARGV[2] .. existing)
  if #record > 0 then
    return {0, record}
  end
end
if redis.call('LLEN', KEYS[3]) >= tonumber(ARGV[6]) then
  return {2}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[3]))
local fields = {}
for name, value in pairs(cjson.decode(ARGV[8])) do
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
redis.call('LPUSH', KEYS[3], ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[1])
redis.call('INCR', KEYS[5])
return {1}
"""


@dataclass(frozen=True, slots=True)
class Accepted:
    record: PaymentRecord
    replayed: bool


class PaymentService:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._accept = redis.register_script(ACCEPT_SCRIPT)

    async def accept(
        self,
        request: PaymentRequest,
        *,
        idempotency_key: str,
        client: str,
        headers: dict[str, Any],
    ) -> Accepted:
        try:
            money = parse_amount(request.amount, request.currency)
        except AmountError as exc:
            raise InvalidRequest(str(exc), code="amount_invalid", param="amount") from exc
        fingerprint = request_fingerprint(
            account_id=request.account_id,
            amount_minor=money.minor,
            currency=money.currency,
            payment_method=request.payment_method,
        )
        payment_id = new_payment_id()
        fields = new_record_fields(
            payment_id=payment_id,
            account_id=request.account_id,
            amount_minor=money.minor,
            currency=money.currency,
            payment_method=request.payment_method,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
        )
        message = charge_message(payment_id, queue=self._settings.queue_name, headers=headers)
        argv: list[str | bytes | int] = [
            payment_id,
            RECORD_PREFIX,
            self._settings.idempotency_ttl_seconds,
            self._settings.record_ttl_seconds,
            message,
            self._settings.queue_max_backlog,
            int(time.time()) + self._settings.sweep_stale_seconds,
            # One argument, decoded by the script: packing some twenty separate arguments
            # cost more than the whole script.
            orjson.dumps(fields),
        ]
        result = await self._accept(
            keys=[
                # Keys are scoped to the client, as Stripe scopes them to an account.
                idempotency_key_slot(f"{client}:{idempotency_key}"),
                record_key(payment_id),
                self._settings.queue_name,
                PENDING,
                ACCEPTED,
            ],
            args=argv,
        )
        if result[0] == 1:
            return Accepted(PaymentRecord.from_redis(fields), replayed=False)
        if result[0] == 2:
            raise ServiceUnavailable(
                "Too many payments are waiting to be charged; retry shortly.",
                code="queue_full",
                headers={"Retry-After": "5"},
            )
        flat = result[1]
        existing = PaymentRecord.from_redis(dict(zip(flat[::2], flat[1::2], strict=True)))
        if existing.key_fingerprint != fingerprint:
            raise IdempotencyKeyMismatch(param="Idempotency-Key", payment_id=existing.id)
        return Accepted(existing, replayed=True)

    async def get(self, payment_id: str) -> PaymentRecord:
        raw = await self._redis.hgetall(record_key(payment_id))
        if not raw:
            raise PaymentNotFound(f"No such payment: {payment_id}", param="id")
        return PaymentRecord.from_redis(raw)
