"""The callbacks' share of a worker process: a bulkhead between receivers and charges.

A worker runs charges and callbacks from one pool of threads. Callbacks in flight at once are
capped (CALLBACK_MAX_IN_FLIGHT, a quarter of the pool by default) so that however slow the
receivers, charges always have threads; and one client's callbacks are capped within that
(CALLBACK_MAX_IN_FLIGHT_PER_CLIENT, half of the share by default) so that one client's slow
receiver cannot take the whole share from the others. A callback that finds no free slot does
not wait for one in its thread: its message goes back to its queue for a moment.
"""

from __future__ import annotations

import threading
from collections import Counter


class CallbackSlots:
    """Thread-safe counts of the callbacks in flight in this process."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._lock = threading.Lock()
        self._busy = 0
        self._by_client: Counter[str] = Counter()

    def take(self, client: str) -> bool:
        """A slot for one of ``client``'s callbacks, if one is free (give it back after)."""
        with self._lock:
            if self._busy >= self.total or self._by_client[client] >= self.per_client:
                return False
            self._busy += 1
            self._by_client[client] += 1
            return True

    def give_back(self, client: str) -> None:
        with self._lock:
            self._busy -= 1
            self._by_client[client] -= 1
            if self._by_client[client] <= 0:
                del self._by_client[client]

    def in_flight(self, client: str | None = None) -> int:
        with self._lock:
            return self._busy if client is None else self._by_client[client]
