"""What the workers' stores of payments, refunds and captures share: their scripts, the lease
an attempt holds, its release before a retry, and the round over a due index."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import orjson
import redis

from shared.settings.service_settings import Settings
from shared.store.lua_scripts import source


def script_args(**named: Any) -> bytes:
    """A script's one argument: its named values as JSON."""
    return orjson.dumps(named)


class LeasedSteps:
    """The workers' steps on one kind of record held under a lease. Thread-safe: one instance
    per process, shared by its threads."""

    # The record's field that counts the attempts of this kind of step.
    ATTEMPTS_FIELD: ClassVar[str] = "attempts"

    def __init__(self, client: redis.Redis, settings: Settings, scripts: tuple[str, ...]) -> None:
        self._redis = client
        self._settings = settings
        self.lease_ms = int(settings.lease_seconds * 1000)
        self._scripts = {name: client.register_script(source(name)) for name in scripts}

    def _run(self, name: str, keys_: list[str], **named: Any) -> Any:
        return self._scripts[name](keys=keys_, args=[script_args(**named)])

    def _held(self, record_id: str) -> tuple[str, str]:
        """The record's key and its lease's key."""
        raise NotImplementedError

    def _start(self, name: str, record_id: str, *, token: str, count: bool) -> Any:
        """The record as the start script's flat field list, held under its lease (an attempt
        counted unless ``count`` is false); or ``"busy"`` (held by another) or ``"skip"``."""
        result = self._run(
            name, list(self._held(record_id)), token=token, lease_ms=self.lease_ms, count=count
        )
        if result[0] == 1:
            return result[1]
        return "busy" if result[0] == -2 else "skip"

    def release(
        self,
        record_id: str,
        *,
        token: str,
        fields: Mapping[str, str] | None = None,
        uncount: bool = False,
    ) -> None:
        """Give the lease back before a retry, saving ``fields`` (e.g. Stripe's ids) on the
        record first; ``uncount``: the attempt does not count (Stripe refused it unprocessed,
        a 429), taken back from ATTEMPTS_FIELD."""
        record_key, lock_key = self._held(record_id)
        self._run(
            "release",
            [lock_key, record_key],
            token=token,
            fields=dict(fields or {}),
            uncount=self.ATTEMPTS_FIELD if uncount else None,
        )

    def _due(self, index: str, *, until: float, limit: int) -> list[str]:
        """The members of the sorted set ``index`` due by ``until``, at most ``limit``."""
        due: list[bytes] = self._redis.zrangebyscore(  # type: ignore[assignment]
            index, "-inf", until, start=0, num=limit
        )
        return [member.decode() for member in due]

    def _requeue_due(
        self,
        index: str,
        *,
        now: float,
        limit: int,
        held: Callable[[str], bool],
        push: Callable[[str, int, int], Any],
    ) -> list[str]:
        """The recovery sweep's round over ``index``: a due member whose message a worker
        holds (``held``) is looked at again after SWEEP_STALE_SECONDS; any other is offered to
        ``push(member, next_at, now_ms)``, whose script pushes it again only if its message is
        provably lost (answers 1). The members pushed."""
        pushed = []
        for member in self._due(index, until=now, limit=limit):
            next_at = int(now) + self._settings.sweep_stale_seconds
            if held(member):
                self._redis.zadd(index, {member: next_at})
                continue
            if push(member, next_at, int(now * 1000)) == 1:
                pushed.append(member)
        return pushed
