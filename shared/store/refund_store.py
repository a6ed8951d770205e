"""Refunds in Redis: claimed against their payment in one step (API), attempted under a lease
and recorded once (workers). One Lua script a step; keys in ``shared.store.keys``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from shared.celery_message import task_message
from shared.payments.payment_records import now_iso
from shared.payments.refund_records import REFUND_TASK, RefundRecord
from shared.payments.states import REFUNDABLE_STATUSES, RefundStatus, Status
from shared.settings.service_settings import Settings
from shared.store import keys
from shared.store.callback_store import filing
from shared.store.leased_steps import LeasedSteps, script_args
from shared.store.lua_scripts import source
from shared.store.payment_store import CLOCK_SKEW_MS, SWEEP_BATCH

_args = script_args


def _record(flat: list[Any]) -> RefundRecord:
    return RefundRecord.from_redis(dict(zip(flat[::2], flat[1::2], strict=True)))


@dataclass(frozen=True, slots=True)
class RefundClaim:
    """claim_refund's answer: exactly one of the fields says what happened."""

    record: RefundRecord | None = None  # written now (created) or found (a replay/conflict)
    created: bool = False
    payment_missing: bool = False
    not_refundable: str | None = None  # the payment's status
    left_minor: int | None = None  # the amount did not fit: what is left


class AsyncRefundStore:
    """The API's steps."""

    def __init__(self, client: AsyncRedis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._claim = client.register_script(source("claim_refund"))

    async def claim(
        self,
        *,
        refund_id: str,
        payment_id: str,
        amount_minor: int | None,
        fields: Mapping[str, str],
        message: bytes,
    ) -> RefundClaim:
        """Write the refund and hold its amount on the payment (``None``: all that is left),
        enqueue its task; or say why not."""
        result = await self._claim(
            keys=[
                keys.refund_key(refund_id),
                keys.record_key(payment_id),
                keys.refunds_key(payment_id),
                self._settings.queue_name,
                keys.REFUNDS_PENDING,
            ],
            args=[
                _args(
                    refund_id=refund_id,
                    amount=amount_minor or 0,
                    fields=dict(fields),
                    refundable=sorted(s.value for s in REFUNDABLE_STATUSES),
                    ttl=self._settings.record_ttl_seconds,
                    message=message.decode(),
                    sweep_at=int(time.time()) + self._settings.sweep_stale_seconds,
                )
            ],
        )
        code = int(result[0])
        if code == 1:
            record = RefundRecord.from_redis({**fields, "amount_minor": str(result[1])})
            return RefundClaim(record=record, created=True)
        if code == 0:
            return RefundClaim(record=_record(result[1]))
        if code == -1:
            return RefundClaim(payment_missing=True)
        if code == -2:
            status = result[1]
            return RefundClaim(
                not_refundable=status.decode() if isinstance(status, bytes) else status
            )
        return RefundClaim(left_minor=int(result[1]))

    async def get(self, refund_id: str) -> RefundRecord | None:
        raw = await self._redis.hgetall(keys.refund_key(refund_id))
        return RefundRecord.from_redis(raw) if raw else None

    async def of_payment(self, payment_id: str) -> list[RefundRecord]:
        """The payment's refunds, oldest first (one round trip for the list, one for them)."""
        ids: list[Any] = await self._redis.lrange(keys.refunds_key(payment_id), 0, -1)
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for refund_id in ids:
                text = refund_id.decode() if isinstance(refund_id, bytes) else str(refund_id)
                pipe.hgetall(keys.refund_key(text))
            raws = await pipe.execute()
        return [RefundRecord.from_redis(raw) for raw in raws if raw]


@dataclass(frozen=True, slots=True)
class RefundStarted:
    record: RefundRecord


class RefundStore(LeasedSteps):
    """The workers' steps. Thread-safe: one instance per process."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        super().__init__(
            client, settings, ("refund_start", "refund_finish", "release", "requeue_refund")
        )

    def _held(self, record_id: str) -> tuple[str, str]:
        return keys.refund_key(record_id), keys.lock_key(record_id)

    def get(self, refund_id: str) -> RefundRecord | None:
        raw: dict[bytes, bytes] = self._redis.hgetall(keys.refund_key(refund_id))  # type: ignore[assignment]
        return RefundRecord.from_redis(raw) if raw else None

    def requeue_stale(
        self, *, queue_oldest_ms: int, reserved: set[str], now: float | None = None
    ) -> list[str]:
        """The recovery sweep for refunds (see PaymentStore.requeue_stale): a pending refund
        whose message is provably lost (no worker holds the refund or its message, the queue
        has moved past it) is pushed again; its task reconciles before any new Stripe write."""
        now = time.time() if now is None else now

        def push(refund_id: str, next_at: int, stamp: int) -> Any:
            message = task_message(
                task_name=REFUND_TASK, task_id=refund_id, args=(refund_id,),
                queue=self._settings.queue_name, headers={"enqueued_at": stamp, "recovered": True},
            )  # fmt: skip
            return self._run(
                "requeue_refund",
                [keys.REFUNDS_PENDING, self._settings.queue_name, keys.refund_key(refund_id),
                 keys.lock_key(refund_id)],
                refund_id=refund_id, next_at=next_at,
                queue_oldest_ms=queue_oldest_ms, clock_skew_ms=CLOCK_SKEW_MS, now_ms=stamp,
                message=message.decode(),
            )  # fmt: skip

        return self._requeue_due(
            keys.REFUNDS_PENDING,
            now=now,
            limit=SWEEP_BATCH,
            held=reserved.__contains__,
            push=push,
        )

    def due_unknown(self, *, limit: int) -> list[str]:
        """Refunds whose outcome is unknown and due for another look at Stripe."""
        return self._due(keys.REFUNDS_UNKNOWN, until=time.time(), limit=limit)

    def start(self, refund_id: str, *, token: str, count: bool = True) -> RefundStarted | str:
        """The refund, held under its lease (an attempt counted unless ``count`` is false); or
        ``"busy"`` / ``"skip"`` (gone or final)."""
        held = self._start("refund_start", refund_id, token=token, count=count)
        return held if isinstance(held, str) else RefundStarted(_record(held))

    def finish(
        self,
        record: RefundRecord,
        *,
        status: RefundStatus,
        fields: Mapping[str, str],
        clear: tuple[str, ...] = (),
        callbacks: tuple[bytes, bytes] = (b"", b""),
        check_at: float = 0,
    ) -> int:
        """Record the refund's outcome (final, or unknown until ``check_at``) and its effect on
        the payment. 0: already final; 1: written; 2: written, the payment is now refunded."""
        return int(
            self._run(
                "refund_finish",
                [
                    keys.refund_key(record.id),
                    keys.lock_key(record.id),
                    keys.record_key(record.payment_id),
                    keys.EVENTS_CHANNEL,
                    keys.REFUNDS_UNKNOWN,
                    keys.TRANSITION_COUNTS,
                    self._settings.callback_queue,
                    keys.REFUNDS_PENDING,
                ],
                refund_id=record.id,
                payment_id=record.payment_id,
                status=status.value,
                succeeded=status is RefundStatus.SUCCEEDED,
                fields=dict(fields),
                clear=list(clear),
                refunded=Status.REFUNDED.value,
                callbacks=[c.decode() for c in callbacks],
                filing=filing(self._settings),
                check_at=int(check_at),
                now_iso=now_iso(),
            )
        )
