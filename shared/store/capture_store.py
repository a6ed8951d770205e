"""Captures and voids of authorized payments in Redis: asked and enqueued in one step (API),
attempted under their own lease and recorded once (workers). They live on the payment's record
(``capture_*`` fields); one Lua script a step, keys in ``shared.store.keys``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from shared.celery_message import task_message
from shared.payments.payment_records import CAPTURE_TASK, PaymentRecord, now_iso
from shared.payments.states import CaptureStatus, Status
from shared.settings.service_settings import Settings
from shared.store import keys
from shared.store.callback_store import filing
from shared.store.leased_steps import LeasedSteps, script_args
from shared.store.lua_scripts import source
from shared.store.payment_store import CLOCK_SKEW_MS, SWEEP_BATCH

_args = script_args


def _record(flat: list[Any]) -> PaymentRecord:
    return PaymentRecord.from_redis(dict(zip(flat[::2], flat[1::2], strict=True)))


def capture_task_id(payment_id: str) -> str:
    """The task id of a payment's capture or void message (the sweep finds it by this)."""
    return f"{payment_id}:capture"


def capture_message(settings: Settings, payment_id: str, headers: dict[str, Any]) -> bytes:
    """The ``payments.capture`` task of a payment, on QUEUE_NAME."""
    return task_message(task_name=CAPTURE_TASK, task_id=capture_task_id(payment_id),
                        args=(payment_id,), queue=settings.queue_name, headers=headers)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CaptureAsk:
    """capture_accept's answer: the record as written or found, or why there is none."""

    record: PaymentRecord | None = None
    created: bool = False  # asked now (False: one asked before, a replay or a conflict)
    missing: bool = False
    not_capturable: str | None = None  # the payment's status


class AsyncCaptureStore:
    """The API's step."""

    def __init__(self, client: AsyncRedis, settings: Settings) -> None:
        self._settings = settings
        self._accept = client.register_script(source("capture_accept"))

    async def ask(
        self, *, payment_id: str, action: str, ask: str, amount_minor: int | None, message: bytes
    ) -> CaptureAsk:
        """Write the capture (``amount_minor``, None: all) or void on the payment and enqueue
        its task; or find the one already asked; or say why not."""
        now = time.time()
        result = await self._accept(
            keys=[keys.record_key(payment_id), self._settings.queue_name, keys.CAPTURES_PENDING],
            args=[_args(action=action, ask=ask, amount=amount_minor or 0, payment_id=payment_id,
                        message=message.decode(), now_iso=now_iso(), now_ms=int(now * 1000),
                        sweep_at=int(now) + self._settings.sweep_stale_seconds)],
        )  # fmt: skip
        code = int(result[0])
        if code == -1:
            return CaptureAsk(missing=True)
        if code == -2:
            status = result[1]
            return CaptureAsk(
                not_capturable=status.decode() if isinstance(status, bytes) else status
            )
        return CaptureAsk(record=_record(result[1]), created=code == 1)


class CaptureStore(LeasedSteps):
    """The workers' steps. Thread-safe: one instance per process."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        super().__init__(
            client, settings, ("capture_start", "capture_finish", "release", "requeue_capture")
        )

    # A capture or void counts its attempts apart from the charge's.
    ATTEMPTS_FIELD = "capture_attempts"

    def _held(self, record_id: str) -> tuple[str, str]:
        return keys.record_key(record_id), keys.capture_lock_key(record_id)

    def start(self, payment_id: str, *, token: str, count: bool = True) -> PaymentRecord | str:
        """The payment with its capture or void, held under the capture's lease (an attempt
        counted unless ``count`` is false); or ``"busy"`` / ``"skip"`` (gone, nothing asked, or
        already settled)."""
        held = self._start("capture_start", payment_id, token=token, count=count)
        return held if isinstance(held, str) else _record(held)

    def requeue_stale(
        self, *, queue_oldest_ms: int, reserved: set[str], now: float | None = None
    ) -> list[str]:
        """The recovery sweep for captures and voids (see PaymentStore.requeue_stale): a
        pending one whose message is provably lost (no worker holds it or its message, the
        queue has moved past it) is pushed again; its task reconciles before any new write."""
        now = time.time() if now is None else now

        def push(payment_id: str, next_at: int, stamp: int) -> Any:
            message = capture_message(self._settings, payment_id,
                                      {"enqueued_at": stamp, "recovered": True})  # fmt: skip
            return self._run(
                "requeue_capture",
                [keys.CAPTURES_PENDING, self._settings.queue_name, keys.record_key(payment_id),
                 keys.capture_lock_key(payment_id)],
                payment_id=payment_id, next_at=next_at, queue_oldest_ms=queue_oldest_ms,
                clock_skew_ms=CLOCK_SKEW_MS, now_ms=stamp, message=message.decode(),
            )  # fmt: skip

        return self._requeue_due(
            keys.CAPTURES_PENDING,
            now=now,
            limit=SWEEP_BATCH,
            held=lambda payment_id: capture_task_id(payment_id) in reserved,
            push=push,
        )

    def due_unknown(self, *, limit: int) -> list[str]:
        """Payments whose capture or void has an unknown outcome, due for another look."""
        return self._due(keys.CAPTURES_UNKNOWN, until=time.time(), limit=limit)

    def finish(
        self,
        payment_id: str,
        *,
        status: CaptureStatus,
        fields: Mapping[str, str],
        clear: tuple[str, ...] = (),
        to: Status | None = None,
        payment_fields: Mapping[str, str] | None = None,
        callback: bytes = b"",
        check_at: float = 0,
    ) -> int:
        """Record the capture's or void's outcome (final, or unknown until ``check_at``) and
        move the payment ``to`` a status with ``payment_fields``. 0: already settled (nothing
        written); 1: written; 2: written and the payment moved; -1: no record."""
        return int(
            self._run(
                "capture_finish",
                [keys.record_key(payment_id), keys.capture_lock_key(payment_id),
                 keys.EVENTS_CHANNEL, keys.CAPTURES_UNKNOWN, keys.TRANSITION_COUNTS,
                 self._settings.callback_queue, keys.CAPTURES_PENDING],
                payment_id=payment_id,
                capture_status=status.value,
                fields=dict(fields),
                clear=list(clear),
                to=to.value if to is not None else "",
                payment_fields=dict(payment_fields or {}),
                callback=callback.decode(),
                filing=filing(self._settings),
                check_at=int(check_at),
                now_iso=now_iso(),
                customers_prefix=keys.CLIENT_CUSTOMERS_PREFIX,
                record_ttl=self._settings.record_ttl_seconds,
            )
        )  # fmt: skip
