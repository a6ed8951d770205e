"""The steps that end a payment never sent to Stripe: its deadline passed (``expire``) or its
client canceled it (``cancel``). Both are one Lua script each (``lua/expire.lua``,
``lua/cancel.lua``, sharing ``lua/lib/unsent.lua``), and both act only on a payment in a status
for which nothing was sent (``UNSENT_STATUSES``) with no worker's lease on it; an attempt's
start leaves that status in the script that takes the lease, so an attempt and these steps
exclude each other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from redis.asyncio import Redis as AsyncRedis

from shared.callbacks.events import payment_callback
from shared.errors import PaymentCanceled, PaymentExpired
from shared.payments.payment_records import PaymentRecord, now_iso
from shared.payments.states import Status
from shared.settings.service_settings import Settings
from shared.store import keys
from shared.store.callback_store import filing as callback_filing
from shared.store.lua_scripts import source
from shared.store.replicated_writes import ReplicatedScript

# Due deadlines looked at in one maintenance round (one script call).
EXPIRE_BATCH = 500


def _error_args(
    error: type[PaymentExpired] | type[PaymentCanceled], status: Status
) -> dict[str, Any]:
    """The record's error for a payment never sent, and the one for a payment queued again
    after attempts (a replayed dead letter): the script picks by the record's ``attempts``."""
    # Imported here: shared.fleet_metrics imports shared.store, which imports this module.
    from shared.fleet_metrics import outcome_field

    never_sent, sent_before = error(), error(error.after_attempts_message)
    return {
        "error": orjson.dumps(never_sent.to_dict()).decode(),
        "error_after_attempts": orjson.dumps(sent_before.to_dict()).decode(),
        "error_status": str(never_sent.status_code),
        "outcome_field": outcome_field(status.value, never_sent.code),
        "backlog_prefix": keys.CLIENT_BACKLOG_PREFIX,
    }


def _now_ms() -> int:
    return int(time.time() * 1000)


def _ending_keys(settings: Settings) -> list[str]:
    """What ending a payment never sent to Stripe (expired or canceled) writes beyond its
    record, in the scripts' order: deadlines, pending index, outcome counts, callback queue,
    and the events channel that tells waiting requests."""
    return [
        keys.DEADLINES,
        keys.PENDING_INDEX,
        keys.OUTCOME_COUNTS,
        settings.callback_queue,
        keys.EVENTS_CHANNEL,
    ]


class DeadlineStore:
    """The workers' side: expire payments still queued past their deadline."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._expire = client.register_script(source("expire"))

    def expire(
        self, payment_ids: list[str], *, now_ms: int | None = None, token: str | None = None
    ) -> list[str]:
        """Expire those of ``payment_ids`` still queued past their deadline with no lease on
        them; drop from the deadlines those no longer queued. With ``token``: the payments
        held under that lease in a first attempt whose create was not sent (expire.lua). The
        ids expired."""
        if not payment_ids:
            return []
        expired: list[bytes] = self._expire(
            keys=_ending_keys(self._settings),
            args=[
                orjson.dumps(
                    {
                        "ids": payment_ids,
                        "now_ms": _now_ms() if now_ms is None else now_ms,
                        **({"token": token} if token else {}),
                        "now_iso": now_iso(),
                        "record_prefix": keys.RECORD_PREFIX,
                        "lock_prefix": keys.LOCK_PREFIX,
                        "callbacks": {
                            p: payment_callback(self._settings, p, Status.EXPIRED).decode()
                            for p in payment_ids
                        },
                        "filing": callback_filing(self._settings),
                        **_error_args(PaymentExpired, Status.EXPIRED),
                    }
                )
            ],
        )
        return [p.decode() if isinstance(p, bytes) else str(p) for p in expired]

    def expire_due(self, *, now_ms: int | None = None) -> list[str]:
        """One round: the payments whose deadline is due (at most EXPIRE_BATCH, earliest first),
        expired if still queued. Those that started an attempt or ended leave the deadlines."""
        now_ms = _now_ms() if now_ms is None else now_ms
        due: list[bytes] = self._redis.zrangebyscore(  # type: ignore[assignment]
            keys.DEADLINES, "-inf", now_ms, start=0, num=EXPIRE_BATCH
        )
        return self.expire([p.decode() for p in due], now_ms=now_ms)


@dataclass(frozen=True, slots=True)
class CancelResult:
    """cancel's answer: ``canceled`` now or ``already`` canceled, else refused (the record
    says why); ``record`` None: no such payment."""

    record: PaymentRecord | None
    canceled: bool = False
    already: bool = False


class AsyncCancelStore:
    """The API's side: a client cancels a payment not yet sent to Stripe. With
    REDIS_MIN_REPLICAS > 0 the answer waits until replicas hold the cancel (else NotDurable),
    so that a failover cannot bring the payment back to queued."""

    def __init__(self, client: AsyncRedis, settings: Settings) -> None:
        self._settings = settings
        self._cancel: Any
        if settings.redis_min_replicas:
            self._cancel = ReplicatedScript(client, source("cancel"),
                                            replicas=settings.redis_min_replicas,
                                            timeout_ms=settings.redis_wait_timeout_ms)  # fmt: skip
        else:
            self._cancel = client.register_script(source("cancel"))

    async def cancel(self, payment_id: str) -> CancelResult:
        result = await self._cancel(
            keys=[
                keys.record_key(payment_id),
                keys.lock_key(payment_id),
                *_ending_keys(self._settings),
            ],
            args=[
                orjson.dumps(
                    {
                        "payment_id": payment_id,
                        "to": Status.CANCELED.value,
                        "now_iso": now_iso(),
                        "callback": payment_callback(
                            self._settings, payment_id, Status.CANCELED
                        ).decode(),
                        "filing": callback_filing(self._settings),
                        **_error_args(PaymentCanceled, Status.CANCELED),
                    }
                )
            ],
        )
        code = int(result[0])
        if code == -1:
            return CancelResult(None)
        flat = result[1]
        record = PaymentRecord.from_redis(dict(zip(flat[::2], flat[1::2], strict=True)))
        return CancelResult(record, canceled=code == 1, already=code == 0)
