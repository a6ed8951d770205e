"""One attempt's Stripe calls: within the shared budget, timed, and keeping the lease.

Each call waits for a slot the attempt booked (``StripeBudget``: its endpoint's and the
account's); a 429 cuts the rate of the limit Stripe says was passed for the whole fleet. While
a call waits, and before a call if the last sign of life is old, ``keepalive`` extends the
payment's lease and the message's visibility (``PaymentStore.heartbeat``), so a long wait in
a backlog is neither mistaken for a dead worker nor a failure. Timings go to the worker's
metrics once, when the attempt ends (``StripeCallMetrics``: Redis learns them with its next
flush).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from shared.fleet_metrics import StripeCallMetrics
from shared.stripe.budget import Slots, StripeBudget, endpoint_of
from shared.stripe.outcomes import TransientStripeError

T = TypeVar("T")

# Well inside the lease (2 x Stripe timeout + 10 s) and the visibility timeout (60 s).
KEEPALIVE_SECONDS = 10.0


def _no_lease() -> bool:
    return True


class LeaseLost(Exception):
    """Another worker took the payment while this one waited: this attempt stops."""


class DeadlinePassed(Exception):
    """The payment's deadline passed while its write waited for its slot: the write was not
    sent (``MeteredStripe.call``'s ``not_after_ms``)."""


class MeteredStripe:
    def __init__(
        self,
        budget: StripeBudget,
        metrics: StripeCallMetrics | None,
        keepalive: Callable[[], bool] = _no_lease,
    ) -> None:
        self._budget = budget
        self._metrics = metrics
        self._keepalive = keepalive
        self._slots: Slots | None = None
        self._alive_at = time.monotonic()
        self._timings: list[tuple[str, float, str]] = []

    def plan(self, *calls: str) -> None:
        """Book the calls (metric labels) this attempt expects to make, in order (a call not
        planned books its own slot when it comes)."""
        self._slots = self._budget.book(calls)

    def _wait_turn(self, call: str) -> None:
        endpoint = endpoint_of(call)
        at = self._slots.take(endpoint) if self._slots else None
        if at is None:
            at = self._budget.book([call]).take(endpoint)
        assert at is not None
        while True:
            now = time.monotonic()
            if now - self._alive_at >= KEEPALIVE_SECONDS:
                if not self._keepalive():
                    raise LeaseLost()
                self._alive_at = now
            if now >= at:
                return
            time.sleep(min(at - now, KEEPALIVE_SECONDS))

    def call(
        self,
        name: str,
        request: Callable[..., T],
        /,
        *,
        not_after_ms: int | None = None,
        **params: Any,
    ) -> T:
        """``request(**params)`` (a StripeGateway method) in its booked slot, timed as
        ``name``; with ``not_after_ms`` (ms since the epoch), a slot that comes at or past it
        raises DeadlinePassed instead, the request never sent."""
        self._wait_turn(name)
        if not_after_ms is not None and time.time() * 1000 >= not_after_ms:
            raise DeadlinePassed()
        started = time.perf_counter()
        outcome = "ok"
        try:
            return request(**params)
        except TransientStripeError as exc:
            outcome = type(exc).__name__
            if exc.rate_limited:
                self._budget.throttled(name, exc)
            raise
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self._timings.append((name, time.perf_counter() - started, outcome))

    def flush(self) -> None:
        """Hand this attempt's timings to the worker's metrics (no Redis call)."""
        if self._timings and self._metrics is not None:
            self._metrics.record_many(self._timings)
        self._timings = []
