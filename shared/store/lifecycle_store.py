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

from shared.celery_message import task_message
from shared.payments.payment_records import STRIPE_EVENT_TASK, PaymentRecord, now_iso
from shared.payments.states import Status
from shared.settings.service_settings import Settings
from shared.store import keys
from shared.store.callback_store import filing
from shared.store.lua_scripts import source
from shared.stripe.outcomes import event_type_label
from shared.stripe.webhook_events import StripeEventRef

# A payment waiting for its customer is first re-checked at Stripe this long after it began
# waiting (worker.action_recheck doubles it from there).
ACTION_RECHECK_FIRST_SECONDS = 300.0


def _args(**named: Any) -> bytes:
    return orjson.dumps(named)


def _take_event(
    settings: Settings, event: StripeEventRef, *, request_id: str, taken: str, seen: str
) -> tuple[list[str], list[bytes]]:
    """The ``stripe_event`` script's keys and arguments: the event's task, as a webhook or the
    catch-up round enqueues it, counted ``taken`` when new and ``seen`` (if any) when not."""
    message = task_message(
        task_name=STRIPE_EVENT_TASK,
        task_id=event.id,
        args=(event.id, event.type, event.object_id, event.charge_id or ""),
        queue=settings.queue_name,
        headers={"request_id": request_id},
    )
    return (
        [keys.stripe_event_key(event.id), settings.queue_name, keys.WEBHOOK_COUNTS],
        [_args(message=message.decode(), ttl=keys.STRIPE_EVENT_TTL_SECONDS, now=int(time.time()),
               type_label=event_type_label(event.type), taken=taken, seen=seen)],
    )  # fmt: skip


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

    async def take_stripe_event(self, event: StripeEventRef, *, request_id: str) -> bool:
        """Remember a verified webhook's event and enqueue its task, once per event id (kept 3
        days); False for an event seen before (nothing enqueued). Counted ``received`` or
        ``duplicate``."""
        keys_, args = _take_event(self._settings, event, request_id=request_id,
                                  taken="received", seen="duplicate")  # fmt: skip
        return bool(await self._stripe_event(keys=keys_, args=args) == 1)

    async def count_webhook(self, type_label: str, outcome: str) -> None:
        await self._redis.hincrby(keys.WEBHOOK_COUNTS, f"{type_label}|{outcome}", 1)


class LifecycleStore:
    """The workers' steps. Thread-safe: one instance per process."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._scripts = {
            name: client.register_script(source(name))
            for name in ("transition", "stripe_refunds", "stripe_event", "events_catchup_progress")
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

    # the catch-up round of Stripe's events (worker.event_catchup) -------------------------

    def catch_up_stripe_event(self, event: StripeEventRef, *, request_id: str) -> bool:
        """The webhook's step for an event the catch-up round listed: taken and its task
        enqueued once per event id (counted ``caught_up``); False, and not counted, for one
        taken before, by its webhook or an earlier round."""
        keys_, args = _take_event(self._settings, event, request_id=request_id,
                                  taken="caught_up", seen="")  # fmt: skip
        return bool(self._scripts["stripe_event"](keys=keys_, args=args) == 1)

    def take_catchup_turn(self, token: str, *, seconds: float) -> bool:
        """The fleet's one catch-up round for ``seconds`` (kept longer while it reads)."""
        return bool(
            self._redis.set(keys.STRIPE_EVENTS_TURN, token, nx=True, px=max(1, int(seconds * 1000)))
        )

    def catchup_cursor(self) -> dict[str, str]:
        raw: dict[bytes, bytes] = self._redis.hgetall(keys.STRIPE_EVENTS_CURSOR)  # type: ignore[assignment]
        return {field.decode(): value.decode() for field, value in raw.items()}

    def save_catchup_cursor(self, token: str, cursor: Mapping[str, str], *, hold: float) -> bool:
        """Save how far the round read (an empty value removes a field) and keep its turn
        ``hold`` seconds more; False (nothing saved) when the turn is no longer ``token``'s."""
        return bool(
            self._run(
                "events_catchup_progress",
                [keys.STRIPE_EVENTS_TURN, keys.STRIPE_EVENTS_CURSOR],
                token=token,
                cursor=dict(cursor),
                hold_ms=max(1, int(hold * 1000)),
            )
        )
