"""The Stripe budget's steps in Redis: book calls, and cut a rate after a 429.

One hash holds the budget of the whole fleet (``keys.STRIPE_BUDGET``): for the account's limit
(``global``) and each endpoint, its next free slot and, after a 429, the rate it was cut to and
when. Booking and cutting are one script each (``book_stripe.lua``, ``stripe_throttled.lua``),
so that every worker and the API see one budget. What they count (calls booked, 429s) goes to
``keys.STRIPE_BUDGET_COUNTS`` for ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from redis.asyncio import Redis as AsyncRedis

from shared.store import keys
from shared.store.lua_scripts import source
from shared.stripe.limits import GLOBAL

# After a 429 the rate is cut to this share of what it was (multiplicative decrease), at most
# once a COOLDOWN (the 429s of calls already sent cut nothing more), never below FLOOR, and
# grows back by INCREASE requests/s every second without one (additive increase).
CUT_FACTOR = 0.7
CUT_COOLDOWN_SECONDS = 1.0
RATE_FLOOR = 1.0
INCREASE_PER_SECOND = 0.5


@dataclass(frozen=True, slots=True)
class Booking:
    """Seconds from now until each booked call's slot; ``refused``: nothing was booked, the
    first call would have waited ``waits[0]``."""

    waits: tuple[float, ...]
    refused: bool = False


def _booking(reply: Sequence[int]) -> Booking:
    if len(reply) == 2 and int(reply[0]) == -1:
        return Booking((int(reply[1]) / 1e6,), refused=True)
    return Booking(tuple(int(us) / 1e6 for us in reply))


def _book_args(calls: Sequence[str], limits: Mapping[str, float], max_wait: float | None) -> bytes:
    named: dict[str, Any] = {
        "calls": list(calls),
        "limits": {name: limits[name] for name in {GLOBAL, *calls}},
        "increase": INCREASE_PER_SECOND,
    }
    if max_wait is not None:
        named["max_wait_us"] = int(max_wait * 1e6)
    return orjson.dumps(named)


def _cut_args(name: str, limit: float) -> bytes:
    return orjson.dumps(
        {
            "name": name,
            "limit": limit,
            "factor": CUT_FACTOR,
            "floor": min(RATE_FLOOR, limit),
            "increase": INCREASE_PER_SECOND,
            "cooldown_us": int(CUT_COOLDOWN_SECONDS * 1e6),
        }
    )


_KEYS = [keys.STRIPE_BUDGET, keys.STRIPE_BUDGET_COUNTS]


class StripeBudgetStore:
    """The workers' side (threads share it)."""

    def __init__(self, client: redis.Redis) -> None:
        self._book = client.register_script(source("book_stripe"))
        self._cut = client.register_script(source("stripe_throttled"))

    def book(
        self, calls: Sequence[str], limits: Mapping[str, float], *, max_wait: float | None = None
    ) -> Booking:
        """Book ``calls`` (endpoint names, in order) under ``limits`` (requests/s by name,
        ``global`` among them)."""
        return _booking(self._book(keys=_KEYS, args=[_book_args(calls, limits, max_wait)]))

    def throttled(self, name: str, limit: float) -> float:
        """Stripe answered 429 for ``name``: cut its rate; the rate now."""
        return float(self._cut(keys=_KEYS, args=[_cut_args(name, limit)]))


class AsyncStripeBudgetStore:
    """The API's side (its reads of Stripe on the event loop)."""

    def __init__(self, client: AsyncRedis) -> None:
        self._book = client.register_script(source("book_stripe"))
        self._cut = client.register_script(source("stripe_throttled"))

    async def book(
        self, calls: Sequence[str], limits: Mapping[str, float], *, max_wait: float | None = None
    ) -> Booking:
        reply = await self._book(keys=_KEYS, args=[_book_args(calls, limits, max_wait)])
        return _booking(reply)

    async def throttled(self, name: str, limit: float) -> float:
        return float(await self._cut(keys=_KEYS, args=[_cut_args(name, limit)]))


@dataclass(frozen=True, slots=True)
class BudgetState:
    """One limit's budget as ``/metrics`` shows it."""

    name: str
    limit: float
    rate: float  # now: the limit, or less for a while after a 429
    booked: int
    rate_limited: int


def current_rate(
    limit: float, cut_rate: bytes | None, cut_at_us: bytes | None, now: float
) -> float:
    """A limit's rate now (as book_stripe.lua reads it): cut after a 429, regaining
    INCREASE_PER_SECOND every second since, up to the limit. ``now``: Unix seconds."""
    if cut_rate is None or cut_at_us is None:
        return limit
    regained = INCREASE_PER_SECOND * max(0.0, now - int(cut_at_us) / 1e6)
    return min(limit, float(cut_rate) + regained)


def budget_states(
    budget: Mapping[bytes, bytes], counts: Mapping[bytes, bytes], limits: Mapping[str, float],
    now: float,
) -> list[BudgetState]:  # fmt: skip
    """Every limit's state, from the two hashes as HGETALL reads them."""
    states = []
    for name, limit in limits.items():
        rate = current_rate(
            limit, budget.get(f"rate|{name}".encode()), budget.get(f"cut|{name}".encode()), now
        )
        states.append(
            BudgetState(
                name=name,
                limit=limit,
                rate=rate,
                booked=int(counts.get(f"booked|{name}".encode(), 0)),
                rate_limited=int(counts.get(f"rate_limited|{name}".encode(), 0)),
            )
        )
    return states
