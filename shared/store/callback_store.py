"""Callbacks in Redis: attempts waiting for their time, dead letters and their replay, counts,
and the callbacks' recovery sweep. (The first message of each callback is pushed by the script
that changes the state.)

At least once, even across kombu's Redis transport: a worker pops a message (BRPOP) and records
it as unacknowledged in a second command, so a Redis crash between the two loses it. Every
script that pushes a callback message therefore files it (``lib/callbacks.lua``) in
``payments:callbacks_pending``, with the message and when it was pushed, and the callback
leaves that set when it is delivered, skipped, dead-lettered or held for a later attempt
(``payments:callback_retries``, whose move back to the queue files it again). The maintenance
round's sweep (``requeue_stale``) pushes again a filed callback only when its message is
provably lost, as for charges and refunds: not among the messages reserved by workers, the
queue has moved past it, and no attempt began since CALLBACK_SWEEP_STALE_SECONDS ago.
Receivers dedupe on ``webhook-id``, so a rare duplicate is harmless; a loss is not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import redis

from shared.celery_message import restamped
from shared.settings.service_settings import Settings
from shared.store import keys
from shared.store.lua_scripts import source

REQUEUE_BATCH = 500
SWEEP_BATCH = 500  # filed callbacks a sweep round looks at, at most
CLOCK_SKEW_MS = 5_000  # as the charges' sweep allows (shared.store.payment_store)
# The event hash's fields while its message is out (removed when the callback is filed no more).
PENDING_FIELDS = ("message", "enqueued_at", "alive_at")


@dataclass(frozen=True, slots=True)
class Held:
    """Another attempt at the event is live, for ``seconds`` more at most."""

    seconds: float


def _args(**named: Any) -> bytes:
    return orjson.dumps(named)


def filing(settings: Settings, *, now: float | None = None) -> dict[str, Any]:
    """What a script that pushes a callback message needs to file it for the recovery sweep
    (``a.filing`` in ``lib/callbacks.lua``): the key names, when it was pushed, when the sweep
    first looks, how long the event's hash lives."""
    now = time.time() if now is None else now
    return {
        "pending": keys.CALLBACKS_PENDING,
        "prefix": keys.CALLBACK_PREFIX,
        "now_ms": int(now * 1000),
        "sweep_at": int(now) + settings.callback_sweep_stale_seconds,
        "ttl": settings.record_ttl_seconds,
    }


class CallbackStore:
    """The workers' (and the dead-letter CLI's) steps. Thread-safe."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._requeue = client.register_script(source("requeue_callbacks"))
        self._replay = client.register_script(source("replay_callback"))
        self._sweep = client.register_script(source("requeue_callback"))
        self._alive = client.register_script(source("callback_alive"))
        self._lease = client.register_script(source("take_callback_lease"))
        self._release = client.register_script(source("release_callback_lease"))

    def count(self, outcome: str) -> None:
        self._redis.hincrby(keys.CALLBACK_COUNTS, outcome, 1)

    def attempt_started(self, event_id: str) -> None:
        """An attempt began: the sweep leaves the callback alone for its stale age."""
        self._alive(
            keys=[keys.CALLBACKS_PENDING, keys.callback_key(event_id)],
            args=[_args(event_id=event_id, now_ms=int(time.time() * 1000))],
        )

    def take_lease(
        self, event_id: str, *, task_id: str, token: str
    ) -> Literal["taken", "duplicate"] | Held:
        """One attempt per event at a time: ``taken`` (the attempt may begin; the sweep sees it
        alive), ``duplicate`` (the message is not the one filed for the event: an attempt
        already done with, or one not due yet), or Held (another attempt is live). The lease
        lasts CALLBACK_TIMEOUT_SECONDS + 30 s and is released by the attempt's outcome."""
        answer = self._lease(
            keys=[keys.CALLBACKS_PENDING, keys.callback_key(event_id), keys.lock_key(event_id)],
            args=[_args(event_id=event_id, task_id=task_id, token=token,
                        lease_ms=int(self._settings.callback_lease_seconds * 1000),
                        now_ms=int(time.time() * 1000))],
        )  # fmt: skip
        if answer[0] == 1:
            return "taken"
        if answer[0] == 0:
            return "duplicate"
        return Held(max(int(answer[1]), 0) / 1000)

    def _unfile(self, pipe: Any, event_id: str, token: str | None) -> None:
        pipe.zrem(keys.CALLBACKS_PENDING, event_id)
        pipe.hdel(keys.callback_key(event_id), *PENDING_FIELDS)
        if token is not None:
            self._release(keys=[keys.lock_key(event_id)], args=[_args(token=token)], client=pipe)

    def settle(self, event_id: str, outcome: str, *, token: str | None = None) -> None:
        """The callback is done with (``delivered``, ``skipped``): it leaves the sweep's
        pending set, and is counted; the attempt's lease (``token``) is released; one MULTI."""
        with self._redis.pipeline(transaction=True) as pipe:
            self._unfile(pipe, event_id, token)
            pipe.hincrby(keys.CALLBACK_COUNTS, outcome, 1)
            pipe.execute()

    def retry_at(
        self, event_id: str, message: bytes, due_at: float, *, token: str | None = None
    ) -> None:
        """Hold the next attempt's message until ``due_at`` (not a Celery countdown: those
        longer than the visibility timeout would be delivered twice). Held here, the callback
        is not the sweep's until it goes back to the queue (``requeue_due`` files it again)."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.CALLBACK_RETRIES, {message: due_at})
            self._unfile(pipe, event_id, token)
            pipe.hincrby(keys.CALLBACK_COUNTS, "retried", 1)
            pipe.execute()

    def requeue_due(self, *, now: float | None = None) -> int:
        """Move the attempts that are due back to the callback queue (the maintenance round),
        each filed again for the recovery sweep."""
        now = time.time() if now is None else now
        return int(
            self._requeue(
                keys=[keys.CALLBACK_RETRIES, self._settings.callback_queue],
                args=[_args(now=now, limit=REQUEUE_BATCH,
                            filing=filing(self._settings, now=now))],
            )
        )  # fmt: skip

    def requeue_stale(
        self, *, queue_oldest_ms: int, reserved: set[str], now: float | None = None
    ) -> list[str]:
        """The callbacks' recovery sweep: push again the due filed callbacks whose message is
        provably lost (see the module's docstring); their event ids. ``queue_oldest_ms`` (the
        callback queue's oldest message, read first) and ``reserved`` (the task ids in kombu's
        ``unacked``, read next) come from the round, as for refunds. A round looks at most
        SWEEP_BATCH callbacks, so its cost does not grow with the backlog."""
        now = time.time() if now is None else now
        due: list[bytes] = self._redis.zrangebyscore(  # type: ignore[assignment]
            keys.CALLBACKS_PENDING, "-inf", now, start=0, num=SWEEP_BATCH
        )
        if not due:
            return []
        next_at = int(now) + self._settings.callback_sweep_stale_seconds
        # A callback's task id is ``{event_id}:{attempt}``.
        held = {task_id.rsplit(":", 1)[0] for task_id in reserved}
        event_ids = [member.decode() for member in due]
        with self._redis.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                if event_id in held:
                    pipe.zadd(keys.CALLBACKS_PENDING, {event_id: next_at})
                else:
                    pipe.hget(keys.callback_key(event_id), "message")
            seen = pipe.execute()
        stamp = int(now * 1000)
        stale_before_ms = stamp - self._settings.callback_sweep_stale_seconds * 1000
        pushed = []
        for event_id, message in zip(event_ids, seen, strict=True):
            if event_id in held:
                continue
            fresh = restamped(message, enqueued_at=stamp, recovered=True) if message else b""
            done = self._sweep(
                keys=[keys.CALLBACKS_PENDING, self._settings.callback_queue,
                      keys.callback_key(event_id)],
                args=[_args(event_id=event_id, seen=(message or b"").decode(),
                            message=fresh.decode(), next_at=next_at,
                            queue_oldest_ms=queue_oldest_ms, clock_skew_ms=CLOCK_SKEW_MS,
                            stale_before_ms=stale_before_ms, now_ms=stamp)],
            )  # fmt: skip
            if done == 1:
                pushed.append(event_id)
        return pushed

    def pending(self) -> list[str]:
        """The callbacks filed for the sweep (their messages are out), oldest look first."""
        return [m.decode() for m in self._redis.zrange(keys.CALLBACKS_PENDING, 0, -1)]  # type: ignore[union-attr]

    def dead_letter(
        self, event_id: str, fields: dict[str, str], *, token: str | None = None
    ) -> None:
        """Keep a callback whose retries ran out (or whose endpoint was refused or is gone),
        with what replays it; one MULTI, so it is listed only with its fields. It leaves the
        sweep's pending set, and the attempt's lease is released, in the same step."""
        with self._redis.pipeline(transaction=True) as pipe:
            self._unfile(pipe, event_id, token)
            pipe.hset(keys.callback_key(event_id), mapping=fields)  # type: ignore[arg-type]
            pipe.expire(keys.callback_key(event_id), self._settings.record_ttl_seconds)
            pipe.zadd(keys.CALLBACK_DEAD_LETTERS, {event_id: time.time()})
            pipe.hincrby(keys.CALLBACK_COUNTS, "dead_lettered", 1)
            pipe.execute()

    def dead_letters(self) -> list[tuple[str, dict[str, str], float]]:
        entries: list[tuple[bytes, float]] = self._redis.zrange(  # type: ignore[assignment]
            keys.CALLBACK_DEAD_LETTERS, 0, -1, withscores=True
        )
        out = []
        for member, score in entries:
            event_id = member.decode()
            raw: dict[bytes, bytes] = self._redis.hgetall(keys.callback_key(event_id))  # type: ignore[assignment]
            out.append((event_id, {k.decode(): v.decode() for k, v in raw.items()}, score))
        return out

    def replay(self, event_id: str, message: bytes) -> bool:
        """Requeue one callback dead letter (``message``: its first attempt again)."""
        done = self._replay(
            keys=[
                keys.CALLBACK_DEAD_LETTERS,
                keys.callback_key(event_id),
                self._settings.callback_queue,
            ],
            args=[
                _args(
                    event_id=event_id,
                    message=message.decode(),
                    now=int(time.time()),
                    filing=filing(self._settings),
                )
            ],
        )
        return bool(done == 1)
