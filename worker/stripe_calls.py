"""One charge attempt's Stripe calls: within the shared budget, timed, and keeping the lease.

Each call waits for a slot the attempt booked (``StripeBudget``); while it waits, and before a
call if the last sign of life is old, ``keepalive`` extends the payment's lease and the
message's visibility (``PaymentStore.heartbeat``), so a long wait in a backlog is neither
mistaken for a dead worker nor a failure. Timings go to Redis once, when the attempt ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import redis
import structlog

from shared.metrics import StripeCallMetrics
from shared.outcomes import ChargeOutcome
from shared.rate_limit import Slots, StripeBudget
from shared.stripe_gateway import StripeGateway

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Well inside the lease (2 x Stripe timeout + 10 s) and the visibility timeout (60 s).
KEEPALIVE_SECONDS = 10.0


class LeaseLost(Exception):
    """Another worker took the payment while this one waited: this attempt stops."""


class MeteredStripe:
    def __init__(
        self,
        gateway: StripeGateway,
        budget: StripeBudget,
        metrics: StripeCallMetrics | None,
        keepalive: Callable[[], bool],
    ) -> None:
        self._gateway = gateway
        self._budget = budget
        self._metrics = metrics
        self._keepalive = keepalive
        self._slots: Slots | None = None
        self._alive_at = time.monotonic()
        self._timings: list[tuple[str, float, str]] = []

    def plan(self, calls: int) -> None:
        """Book the calls this attempt expects to make (one more is booked if it needs it)."""
        self._slots = self._budget.book(calls)

    def _wait_turn(self) -> None:
        at = self._slots.take() if self._slots else None
        if at is None:
            self._slots = self._budget.book(1)
            at = self._slots.take()
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

    def _call(self, name: str, request: Callable[[], T]) -> T:
        self._wait_turn()
        started = time.perf_counter()
        outcome = "ok"
        try:
            return request()
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self._timings.append((name, time.perf_counter() - started, outcome))

    def flush(self, payment_id: str) -> None:
        """Write this attempt's timings (one round trip); never fails the charge."""
        if self._timings and self._metrics is not None:
            try:
                self._metrics.record_many(self._timings)
            except redis.RedisError:
                log.debug("metrics.unrecorded", payment_id=payment_id)
        self._timings = []

    # the calls ---------------------------------------------------------------------------

    def default_payment_method(self, *, customer: str) -> str:
        return self._call(
            "customers.retrieve",
            lambda: self._gateway.default_payment_method(customer=customer),
        )

    def create_payment_intent(
        self,
        *,
        customer: str,
        amount_minor: int,
        currency: str,
        payment_method: str,
        payment_id: str,
        idempotency_key: str,
    ) -> ChargeOutcome:
        return self._call(
            "payment_intents.create",
            lambda: self._gateway.create_payment_intent(
                customer=customer,
                amount_minor=amount_minor,
                currency=currency,
                payment_method=payment_method,
                payment_id=payment_id,
                idempotency_key=idempotency_key,
            ),
        )

    def retrieve_payment_intent(self, *, payment_intent_id: str) -> ChargeOutcome:
        return self._call(
            "payment_intents.retrieve",
            lambda: self._gateway.retrieve_payment_intent(payment_intent_id=payment_intent_id),
        )

    def find_payment_intent(
        self, *, customer: str, payment_id: str, created_after: int
    ) -> ChargeOutcome | None:
        return self._call(
            "charges.list",
            lambda: self._gateway.find_payment_intent(
                customer=customer, payment_id=payment_id, created_after=created_after
            ),
        )
