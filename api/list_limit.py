"""A bound on concurrent Stripe list calls in one API process, so reads cannot starve accepts.

``GET /{customer_id}/payments`` waits on Stripe and then turns a page of charges into JSON on
the event loop: a few milliseconds of CPU per call, which every accept on the same loop waits
behind. Unbounded, 64 concurrent list connections halved accept throughput. At most
``LIST_MAX_CONCURRENCY`` list calls run at once per process; one more is refused at once with
503 ``list_busy`` and ``Retry-After`` (never queued: a queue would only move the wait and hold
the connection). Lists scale by adding API processes, each with its own bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.errors import ServiceUnavailable


class ListBusy(ServiceUnavailable):
    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "Too many payment lists are being read from Stripe right now; retry shortly.",
            code="list_busy",
            headers={"Retry-After": str(retry_after)},
        )


class ListLimiter:
    """Counts list calls in flight; refuses past the bound (no waiting, no queue)."""

    def __init__(self, max_concurrency: int, retry_after: int = 1) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self.retry_after = retry_after
        self.in_flight = 0
        self.refused = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.in_flight >= self.max_concurrency:
            self.refused += 1
            raise ListBusy(self.retry_after)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
