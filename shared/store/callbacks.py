"""Callbacks in Redis: attempts waiting for their time, dead letters and their replay, counts.
(The first message of each callback is pushed by the script that changes the state.)"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from shared.config import Settings
from shared.store import keys
from shared.store.scripts import source

REQUEUE_BATCH = 500


def _args(**named: Any) -> bytes:
    return orjson.dumps(named)


class CallbackStore:
    """The workers' (and the dead-letter CLI's) steps. Thread-safe."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._requeue = client.register_script(source("requeue_callbacks"))
        self._replay = client.register_script(source("replay_callback"))

    def count(self, outcome: str) -> None:
        self._redis.hincrby(keys.CALLBACK_COUNTS, outcome, 1)

    def retry_at(self, message: bytes, due_at: float) -> None:
        """Hold the next attempt's message until ``due_at`` (not a Celery countdown: those
        longer than the visibility timeout would be delivered twice)."""
        self._redis.zadd(keys.CALLBACK_RETRIES, {message: due_at})

    def requeue_due(self, *, now: float | None = None) -> int:
        """Move the attempts that are due back to the callback queue (the maintenance round)."""
        return int(
            self._requeue(
                keys=[keys.CALLBACK_RETRIES, self._settings.callback_queue],
                args=[_args(now=time.time() if now is None else now, limit=REQUEUE_BATCH)],
            )
        )

    def dead_letter(self, event_id: str, fields: dict[str, str]) -> None:
        """Keep a callback whose retries ran out (or whose endpoint was refused), with what
        replays it; one MULTI, so it is listed only with its fields."""
        with self._redis.pipeline(transaction=True) as pipe:
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
            args=[_args(event_id=event_id, message=message.decode(), now=int(time.time()))],
        )
        return bool(done == 1)
