"""A client's own payments, newest first (GET /payments), from the indexes the scripts keep.

Every accept files the payment in its client's sets (``index_new`` in lua/lib/common.lua,
inside accept.lua's one round trip) and every move of a status moves its entry in the same
script (``index_move``), so a status filter agrees with the records. Sets (shared.store.keys):
the client's listed set, one set a status and one a customer, all scored by creation (ms).
A page is one script (``list_page.lua``): the cursor's place, the sets' ranges merged, and the
records, in one round trip. A status filter reads its status sets; a customer filter its
customer set (a customer's payments, few next to the client's: read directly rather than
scanning the client's set for them); both read the smaller side and filter the other on the
records, at most ``SCAN_BOUND`` entries a page.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from redis.asyncio import Redis

from shared.payments.payment_records import PaymentRecord
from shared.payments.rfc3339 import ms_from_rfc3339
from shared.settings.service_settings import Settings
from shared.store import keys
from shared.store.lua_scripts import source

# Entries one page looks at beyond its own: records expired before their entries were trimmed,
# and, with both a status and a customer filter, payments of the other side.
SCAN_BOUND = 1000


@dataclass(frozen=True, slots=True)
class Page:
    records: list[PaymentRecord]
    has_more: bool
    next_cursor: str | None


class CursorMissing(LookupError):
    """``starting_after`` is not one of the client's listed payments."""


class AsyncListStore:
    def __init__(self, client: Redis, settings: Settings) -> None:
        self._page = client.register_script(source("list_page"))
        self._retention_ms = settings.record_ttl_seconds * 1000

    async def page(
        self,
        client: str,
        *,
        limit: int,
        statuses: Sequence[str] = (),
        customer: str | None = None,
        created_gte_ms: int | None = None,
        created_lt_ms: int | None = None,
        starting_after: str | None = None,
    ) -> Page:
        """Up to ``limit`` of the client's payments, newest first, matching every filter given
        (``statuses``: any of them); past the retention nothing is listed."""
        listed = keys.client_listed(client)
        by_status = [keys.client_status(client, status) for status in statuses]
        by_customer = [keys.client_customer(client, customer)] if customer else []
        sets = [*by_customer, *by_status] or [listed]
        oldest = int(time.time() * 1000) - self._retention_ms
        args: dict[str, Any] = {
            "limit": limit,
            "min": max(oldest, created_gte_ms or 0),
            "scan": limit + 1 + SCAN_BOUND,
            "record_prefix": keys.RECORD_PREFIX,
        }
        if created_lt_ms is not None:
            args["lt"] = created_lt_ms
        if starting_after:
            args["after"] = starting_after
        if statuses and customer:
            args["statuses"], args["customer"] = list(statuses), customer
        answer = await self._page(keys=[listed, *sets], args=[orjson.dumps(args)])
        if int(answer[0]) == -1:
            raise CursorMissing(starting_after)
        cursor = answer[2].decode() if isinstance(answer[2], bytes) else str(answer[2])
        return Page(
            records=[_record(flat) for flat in answer[3:]],
            has_more=int(answer[1]) == 1,
            next_cursor=cursor or None,
        )


def _record(flat: list[Any]) -> PaymentRecord:
    return PaymentRecord.from_redis(dict(zip(flat[::2], flat[1::2], strict=True)))


class ListBackfill:
    """Files in their clients' lists the payments whose records were written before the
    accept kept those lists (a deployment upgraded from such a version): without it a client
    would not see its payments of the last RECORD_TTL_SECONDS in ``GET /payments``. A
    maintenance round (``list_backfill``) runs a bounded part of it, ``steps`` SCANs of about
    ``count`` records each, from where the last left off (``keys.LIST_BACKFILL``), until the
    records have all been looked at once; then it is done and looks no more (every later
    accept files its own payment). Each record is filed as the accept would have filed it,
    by ``index_existing.lua``: from the record as it is inside that step, never twice, and never
    a payment without a client."""

    def __init__(self, client: redis.Redis, *, count: int = 1000, steps: int = 50) -> None:
        self._client = client
        self._index = client.register_script(source("index_existing"))
        self._count = count
        self._steps = steps
        self._done = False  # known done: no more reads of keys.LIST_BACKFILL

    def run(self) -> int | None:
        """One round's part; how many payments it filed, or None when it was done already."""
        if self._done:
            return None
        state = self._client.hgetall(keys.LIST_BACKFILL)
        if b"done" in state:
            self._done = True
            return None
        cursor, filed = int(state.get(b"cursor", 0)), 0
        for _ in range(self._steps):
            cursor, found = self._client.scan(
                cursor, match=keys.RECORD_PREFIX + "pay_*", count=self._count, _type="hash"
            )
            if found:
                filed += self._file(found)
            if cursor == 0:
                break
        mark = ["cursor", str(cursor)]
        if cursor == 0:
            mark += ["done", f"{time.time():.3f}"]
        self._client.hset(keys.LIST_BACKFILL, items=mark)
        self._done = cursor == 0
        return filed

    def _file(self, records: list[bytes | str]) -> int:
        with self._client.pipeline(transaction=False) as pipe:
            for record in records:
                pipe.hget(record, "created_at")
            stamps = pipe.execute()
        created = [_ms(stamp) for stamp in stamps]
        return int(self._index(keys=records, args=[orjson.dumps({"created": created})]))


def _ms(stamp: bytes | str | None) -> int:
    """A record's ``created_at`` in ms; 0 (not filed) for none or one that does not read."""
    try:
        if isinstance(stamp, bytes):
            stamp = stamp.decode()
        return ms_from_rfc3339(stamp) if stamp else 0
    except (ValueError, UnicodeDecodeError):
        return 0
