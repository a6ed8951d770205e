"""The Stripe request budget shared by every worker process (GCRA in Redis, no burst).

Celery's own ``rate_limit`` is per worker, so N workers would make N times the calls; Stripe's
limit is per account. Each charge attempt books the calls it will make in one Redis call
(``PaymentStore.reserve_stripe_slots``) and then waits for its slots: callers are served in the
order they booked, nobody polls, and a wait is never a failure, however long the backlog.
No well-kept library fits: limits/redis-rate-limiters refuse rather than schedule.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol


class SlotBooker(Protocol):
    def reserve_stripe_slots(self, *, count: int, interval_us: int) -> float: ...


@dataclass(slots=True)
class Slots:
    """Booked calls: the first at ``first_at`` (monotonic seconds), then one per interval."""

    first_at: float
    interval: float
    count: int
    used: int = 0

    def take(self) -> float | None:
        """When the next booked call may go, or None once all are used."""
        if self.used >= self.count:
            return None
        at = self.first_at + self.used * self.interval
        self.used += 1
        return at


class StripeBudget:
    def __init__(self, booker: SlotBooker, rate_per_second: float) -> None:
        self._booker = booker
        self.enabled = rate_per_second > 0
        self._interval_us = int(1_000_000 / rate_per_second) if self.enabled else 0
        self._lock = threading.Lock()
        self._booked_until = 0.0  # monotonic: the end of the last slot this process booked

    def book(self, calls: int) -> Slots:
        """Book ``calls`` Stripe calls (one Redis round trip; none when the cap is off)."""
        now = time.monotonic()
        if not self.enabled or calls <= 0:
            return Slots(first_at=now, interval=0.0, count=max(calls, 0))
        wait = self._booker.reserve_stripe_slots(count=calls, interval_us=self._interval_us)
        slots = Slots(first_at=now + wait, interval=self._interval_us / 1e6, count=calls)
        with self._lock:
            self._booked_until = max(self._booked_until, slots.first_at + calls * slots.interval)
        return slots

    def booked_ahead(self) -> float:
        """How far ahead the budget is booked, as this process last learned it: seconds until
        the end of the last slot it booked (0 when none is ahead)."""
        return max(0.0, self._booked_until - time.monotonic())
