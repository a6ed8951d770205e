"""A bound on concurrent Stripe list calls in one API process, so reads cannot starve accepts,
and a share of it per client, so one client's lists cannot keep another's out.

``GET /{customer_id}/payments`` waits on Stripe and then turns a page of charges into JSON on
the event loop: a few milliseconds of CPU per call, which every accept on the same loop waits
behind. Unbounded, 64 concurrent list connections halved accept throughput. At most
``LIST_MAX_CONCURRENCY`` list calls run at once per process, and at most the client's cap of
them for one client (its ``list_concurrency``, else ``LIST_CLIENT_SHARE`` of the bound, at
least one). One more is refused at once with 503 ``list_busy`` and ``Retry-After`` (never
queued: a queue would only move the wait and hold the connection). Lists scale by adding API
processes, each with its own bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.errors import ServiceUnavailable
from shared.settings.api_clients import ANONYMOUS, Client


class ListBusy(ServiceUnavailable):
    def __init__(
        self,
        retry_after: int,
        message: str = "Too many payment lists are being read from Stripe right now; retry "
        "shortly.",
    ) -> None:
        super().__init__(message, code="list_busy", headers={"Retry-After": str(retry_after)})


class ListLimiter:
    """Counts list calls in flight, in all and per client; refuses past either bound (no
    waiting, no queue)."""

    def __init__(
        self, max_concurrency: int, retry_after: int = 1, *, client_cap: int | None = None
    ) -> None:
        """``client_cap``: what one client may hold when it has no ``list_concurrency`` of its
        own (None: the whole bound)."""
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self.retry_after = retry_after
        self.client_cap = min(max_concurrency, max(1, client_cap or max_concurrency))
        self.in_flight = 0
        self.by_client: dict[str, int] = {}
        self.refused = 0

    def cap_for(self, client: Client) -> int:
        own = client.list_concurrency
        return self.client_cap if own is None else min(self.max_concurrency, own)

    @asynccontextmanager
    async def slot(self, client: Client | None = None) -> AsyncIterator[None]:
        who = client or ANONYMOUS
        held = self.by_client.get(who.name, 0)
        if self.in_flight >= self.max_concurrency:
            self.refused += 1
            raise ListBusy(self.retry_after)
        cap = self.cap_for(who)
        if held >= cap:
            self.refused += 1
            raise ListBusy(
                self.retry_after,
                f"This client already has {cap} payment list(s) being read from Stripe, its "
                "share; retry shortly.",
            )
        self.in_flight += 1
        self.by_client[who.name] = held + 1
        try:
            yield
        finally:
            self.in_flight -= 1
            left = self.by_client[who.name] - 1
            if left:
                self.by_client[who.name] = left
            else:
                del self.by_client[who.name]


def client_cap(max_concurrency: int, share: float, clients: int) -> int | None:
    """One client's cap (LIST_CLIENT_SHARE of the bound, at least one); None, the whole bound,
    when there is at most one client to serve."""
    if clients <= 1:
        return None
    return max(1, int(max_concurrency * share))
