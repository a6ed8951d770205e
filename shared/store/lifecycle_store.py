"""A payment's life after the charge path's first answer: Stripe's webhook events taken once,
moves as the state machine allows (``shared.payments.states``), refunds. One Lua script a step.

``AsyncLifecycleStore`` serves the API's event loop, ``LifecycleStore`` the workers' threads;
the keys are in ``shared.store.keys``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson
import redis
from redis.asyncio import Redis as AsyncRedis

from shared.payments.payment_records import PaymentRecord, now_iso
from shared.payments.states import Status
from shared.settings.service_settings import Settings
from shared.store import keys
from shared.store.callback_store import filing
from shared.store.lua_scripts import source

# A payment waiting for its customer is first re-checked at Stripe this long after it began
# waiting (worker.action_recheck doubles it from there).
ACTION_RECHECK_FIRST_SECONDS = 300.0


def _args(**named: Any) -> bytes:
    return orjson.dumps(named)


class Moved(Enum):
    """What ``LifecycleStore.transition`` did."""

    MOVED = 1
    UNCHANGED = 0  # already in that status
    GONE = -1  # no such record (expired, or never ours)
    REFUSED = -2  # the state machine has no such move


@dataclass(frozen=True, slots=True)
class Transition:
    """A move to ``to``, with the fields it writes and the ones it clears."""

    to: Status
    fields: Mapping[str, str]
    clear: tuple[str, ...] = ()


class AsyncLifecycleStore:
    """The API's steps."""

    def __init__(self, client: AsyncRedis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._stripe_event = client.register_script(source("stripe_event"))

    async def take_stripe_event(self, *, event_id: str, type_label: str, message: bytes) -> bool:
        """Remember a verified event and enqueue its task, once per event id (kept 3 days);
        False for an event seen before (nothing enqueued)."""
        result = await self._stripe_event(
            keys=[keys.stripe_event_key(event_id), self._settings.queue_name,
                  keys.WEBHOOK_COUNTS],
            args=[_args(message=message.decode(), ttl=keys.STRIPE_EVENT_TTL_SECONDS,
                        now=int(time.time()), type_label=type_label)],
        )  # fmt: skip
        return bool(result == 1)

    async def count_webhook(self, type_label: str, outcome: str) -> None:
        await self._redis.hincrby(keys.WEBHOOK_COUNTS, f"{type_label}|{outcome}", 1)


class LifecycleStore:
    """The workers' steps. Thread-safe: one instance per process."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._scripts = {
            name: client.register_script(source(name)) for name in ("transition", "stripe_refunds")
        }

    def _run(self, name: str, keys_: list[str], **named: Any) -> Any:
        return self._scripts[name](keys=keys_, args=[_args(**named)])

    def get(self, payment_id: str) -> PaymentRecord | None:
        raw: dict[bytes, bytes] = self._redis.hgetall(keys.record_key(payment_id))  # type: ignore[assignment]
        return PaymentRecord.from_redis(raw) if raw else None

    def transition(self, payment_id: str, move: Transition, *, callback: bytes = b"") -> Moved:
        """Move the payment as the state machine allows, telling waiters; ``callback`` (a
        task message) is pushed in the same step when the payment has a callback endpoint."""
        result = self._run(
            "transition",
            [
                keys.record_key(payment_id),
                keys.EVENTS_CHANNEL,
                keys.PENDING_INDEX,
                keys.UNKNOWN_INDEX,
                keys.DEAD_LETTERS,
                keys.TRANSITION_COUNTS,
                self._settings.callback_queue,
            ],
            payment_id=payment_id,
            to=move.to.value,
            fields=dict(move.fields),
            clear=list(move.clear),
            now_iso=now_iso(),
            callback=callback.decode(),
            filing=filing(self._settings),
            customers_prefix=keys.CLIENT_CUSTOMERS_PREFIX,
            record_ttl=self._settings.record_ttl_seconds,
        )
        return Moved(int(result))

    def record_stripe_refunds(
        self, payment_id: str, *, stripe_refunded_minor: int, callback: bytes = b""
    ) -> int:
        """Stripe's amount_refunded for the payment's charge (it only grows); the payment
        becomes ``refunded`` once refunds reach its amount. -1 no record, 0 nothing new, 1
        recorded, 2 recorded and now refunded."""
        return int(
            self._run(
                "stripe_refunds",
                [keys.record_key(payment_id), keys.EVENTS_CHANNEL, keys.TRANSITION_COUNTS,
                 self._settings.callback_queue],
                payment_id=payment_id,
                stripe_refunded=stripe_refunded_minor,
                to=Status.REFUNDED.value,
                now_iso=now_iso(),
                callback=callback.decode(),
                filing=filing(self._settings),
            )
        )  # fmt: skip

    # re-checks of payments waiting for their customer (worker.action_recheck) -------------

    def schedule_action_check(self, payment_id: str, *, at: float | None = None) -> None:
        due = time.time() + ACTION_RECHECK_FIRST_SECONDS if at is None else at
        self._redis.zadd(keys.AWAITING_ACTION, {payment_id: due})

    def due_action_checks(self, *, limit: int) -> list[str]:
        due: list[bytes] = self._redis.zrangebyscore(  # type: ignore[assignment]
            keys.AWAITING_ACTION, "-inf", time.time(), start=0, num=limit
        )
        return [member.decode() for member in due]

    def drop_action_check(self, payment_id: str) -> None:
        self._redis.zrem(keys.AWAITING_ACTION, payment_id)

    def count_webhook(self, type_label: str, outcome: str) -> None:
        self._redis.hincrby(keys.WEBHOOK_COUNTS, f"{type_label}|{outcome}", 1)
