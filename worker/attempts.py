"""One skeleton for every Stripe write made for a client (a charge, a refund): the attempt, and
the reconciliation of those whose outcome is unknown.

Each operation keeps the rules stated for charges in worker.charge:
- one worker at a time holds the operation (a lease in Redis), and every write carries an
  idempotency key derived from our own id, the same on every retry;
- whenever an earlier attempt may have reached Stripe without its answer being recorded (any
  retry or redelivery, a replayed dead letter, a key Stripe says was used with other
  parameters), the attempt first looks at Stripe for the object carrying our id and adopts it;
- a 429 from one of Stripe's limiters is a definite answer: Stripe did not process the
  request. It is retried soon, with no attempt counted toward giving up, so it adds no
  reconciliation either (the budget has cut that limit's rate: ``worker.stripe_calls``);
- a 429 ``lock_timeout`` (another request held the object, such as the customer) is not
  processed either, but says nothing of the rate and may last as long as what holds the
  object: it is retried as a transient failure (counted, with backoff, given up as below), so
  that a customer kept locked ends the payment instead of retrying it forever;
- other transient failures are retried with backoff (``retry_backoff``); when the retries run out,
  Stripe is asked once more: found, adopted; none found (Stripe answered), failed as not done;
  Stripe unreachable, ``unknown``, and ``reconcile_round`` keeps asking, with backoff, until it
  knows;
- waiting for the shared Stripe budget is not a failure (``worker.stripe_calls``).

An operation plugs in its own parts by subclassing ``Attempts``: how it is held and recorded
(its store), how Stripe is asked for it and how it is written (the gateway), and what Stripe's
answer means for its record (``Verdict``).
"""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import structlog

from shared.backoff import backoff
from shared.errors import PaymentServiceError, UpstreamError
from shared.fleet_metrics import StripeCallMetrics
from shared.settings.service_settings import Settings
from shared.store import Busy
from shared.stripe.budget import StripeBudget
from shared.stripe.outcomes import TransientStripeError
from worker.stripe_calls import DeadlinePassed, LeaseLost, MeteredStripe

log = structlog.get_logger(__name__)

LEASE_BUSY_RETRY_SECONDS = 5.0
IN_FLIGHT_RECHECK_SECONDS = 2.0
RECONCILE_BATCH = 20


class Held(Protocol):
    """An operation's record as an attempt holds it."""

    @property
    def id(self) -> str: ...

    @property
    def attempts(self) -> int: ...

    @property
    def reconcile_attempts(self) -> int: ...


HeldT = TypeVar("HeldT", bound=Held)
OutcomeT = TypeVar("OutcomeT")  # what Stripe says of the object (a PaymentIntent, a Refund)
StatusT = TypeVar("StatusT", bound=StrEnum)


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Not done yet: run the task again after ``countdown`` seconds."""

    reason: str
    countdown: float


@dataclass(frozen=True, slots=True)
class Done(Generic[StatusT]):
    status: StatusT | None  # None: nothing to do (gone, already final, or the lease lost)


@dataclass(frozen=True, slots=True)
class Verdict(Generic[StatusT]):
    """What Stripe's answer means for the record: its status (``None`` while Stripe is still
    at it), its error, and the fields to write (Stripe's ids) and to remove."""

    status: StatusT | None
    error: PaymentServiceError | None = None
    fields: dict[str, str] = field(default_factory=dict)
    clear: tuple[str, ...] = ()


def retry_backoff(settings: Settings, attempts: int, retry_after: float | None) -> float:
    """Before a Stripe write is tried again: exponential with full jitter, or Stripe's
    Retry-After, capped (CHARGE_RETRY_BACKOFF_*; charges and refunds alike)."""
    cap = settings.charge_retry_backoff_max_seconds
    if retry_after is not None:
        return min(retry_after, cap)
    base = settings.charge_retry_backoff_seconds
    return backoff(attempts - 1, base=base, cap=cap, jitter="full")


class Attempts(ABC, Generic[HeldT, OutcomeT, StatusT]):
    """The skeleton; a subclass is one operation."""

    name: ClassVar[str]  # the log events' prefix: ``charge``, ``refund``
    noun: ClassVar[str]  # what a client calls it: ``payment``, ``refund``
    in_flight: ClassVar[str]  # why a retry waits while Stripe is still at it
    # The metric labels of its calls (shared.stripe.limits.ENDPOINTS), booked up front.
    retrieve_call: ClassVar[str]
    find_call: ClassVar[str]
    write_call: ClassVar[str]

    def __init__(
        self, settings: Settings, budget: StripeBudget, metrics: StripeCallMetrics | None
    ) -> None:
        self._settings = settings
        self._budget = budget
        self._metrics = metrics

    # --- the operation's own parts ---------------------------------------------------------

    @abstractmethod
    def _start(self, key: str, *, token: str) -> HeldT | Busy | None:
        """Take the lease and count an attempt; ``None`` when gone or already final."""

    @abstractmethod
    def _hold(self, key: str, *, token: str) -> HeldT | None:
        """Take the lease to reconcile, counting no attempt; ``None`` when not to be had."""

    @abstractmethod
    def _due_unknown(self, *, limit: int) -> list[str]:
        """The ones whose outcome is unknown and due for another look at Stripe."""

    @abstractmethod
    def _keepalive(self, held: HeldT, token: str, delivery_tag: str | None) -> Callable[[], bool]:
        """Extends the lease while the attempt waits for the budget; False when it is lost."""

    @abstractmethod
    def _log_fields(self, held: HeldT) -> dict[str, Any]:
        """Our ids, for every log line of the attempt."""

    @abstractmethod
    def _at_stripe(self, held: HeldT) -> bool:
        """Stripe already has it, still at work: ask for its state instead of writing."""

    @abstractmethod
    def _retrieve(self, held: HeldT, stripe: MeteredStripe) -> OutcomeT: ...

    @abstractmethod
    def _find(self, held: HeldT, stripe: MeteredStripe) -> OutcomeT | None:
        """What an earlier attempt made at Stripe, looked up by our own id, if anything."""

    @abstractmethod
    def _write(self, held: HeldT, stripe: MeteredStripe) -> OutcomeT:
        """The one Stripe write, with the idempotency key derived from our id."""

    @abstractmethod
    def _stripe_ids(self, outcome: OutcomeT) -> dict[str, str]:
        """Stripe's ids of the object, for the log."""

    @abstractmethod
    def _verdict(self, outcome: OutcomeT) -> Verdict[StatusT]: ...

    @abstractmethod
    def _release(
        self, held: HeldT, token: str, fields: dict[str, str], *, uncount: bool = False
    ) -> None:
        """Give the lease back before a retry, saving ``fields`` first (``uncount``: and take
        back this attempt's count: Stripe refused it unprocessed)."""

    @abstractmethod
    def _record(self, held: HeldT, verdict: Verdict[StatusT]) -> Done[StatusT]:
        """Record a settled outcome (a success clears an earlier error)."""

    @abstractmethod
    def _failed(self, held: HeldT, error: PaymentServiceError) -> Done[StatusT]:
        """Stripe refused it for good."""

    @abstractmethod
    def _not_done(self, held: HeldT) -> Done[StatusT]:
        """Retries ran out and Stripe, asked, holds nothing of ours: failed, nothing done."""

    @abstractmethod
    def _unknown(self, held: HeldT, seen: Verdict[StatusT], *, check_at: float) -> Done[StatusT]:
        """Whether Stripe did it is unknown (``seen``: what it said, if anything, while still
        at it): looked at again from ``check_at``."""

    @abstractmethod
    def _postpone(self, held: HeldT, token: str, *, check_at: float) -> None:
        """Still unknown (Stripe cannot be asked): count the look, look again at ``check_at``."""

    def _past_deadline(self, held: HeldT, token: str) -> Done[StatusT]:
        """The write waited past the deadline it was given and was not sent (DeadlinePassed);
        only a processor whose writes are given one has to say what then."""
        raise NotImplementedError(f"{self.name} writes carry no deadline")

    def _reconcile_first(self, held: HeldT) -> bool:
        """Besides a retry: must a first attempt look at Stripe before writing?"""
        return False

    def _calls_before_write(self, held: HeldT) -> tuple[str, ...]:
        """Stripe calls the write makes before it (to book the budget once)."""
        return ()

    def _write_call(self, held: HeldT) -> str:
        """The write's own call (its metric label)."""
        return self.write_call

    # --- the skeleton ----------------------------------------------------------------------

    def process(self, key: str, *, delivery_tag: str | None = None) -> Done[StatusT] | RetryLater:
        """One attempt: done (recorded, or nothing to do), or to be run again later."""
        # The delivery's own tag: if Redis drops out mid-attempt, the same delivery starts
        # again under the lease it already holds instead of waiting for it to expire.
        token = delivery_tag or secrets.token_hex(8)
        held = self._start(key, token=token)
        if isinstance(held, Busy):
            log.info(f"{self.name}.leased_elsewhere", **{f"{self.noun}_id": key})
            return RetryLater(f"another worker holds this {self.noun}", LEASE_BUSY_RETRY_SECONDS)
        if held is None:
            log.info(f"{self.name}.skipped", **{f"{self.noun}_id": key}, reason="gone_or_final")
            return Done(None)
        bound = log.bind(**self._log_fields(held), attempt=held.attempts)
        bound.info(f"{self.name}.started")
        stripe = self._stripe(held, token, delivery_tag)
        try:
            outcome = self._attempt(held, stripe)
        except LeaseLost:
            bound.warning(f"{self.name}.lease_lost")
            return Done(None)
        except DeadlinePassed:
            bound.info(f"{self.name}.deadline_passed", sent=False)
            return self._past_deadline(held, token)
        except TransientStripeError as exc:
            if exc.rate_limited:
                countdown = retry_backoff(self._settings, 1, exc.retry_after)
                bound.info(f"{self.name}.rate_limited", reason=str(exc),
                           countdown=round(countdown, 2))  # fmt: skip
                self._release(held, token, {}, uncount=True)
                return RetryLater(str(exc), countdown)
            if held.attempts > self._settings.charge_max_retries:
                return self._give_up(held, stripe, bound)
            countdown = retry_backoff(self._settings, held.attempts, exc.retry_after)
            bound.info(f"{self.name}.retry", reason=str(exc), countdown=round(countdown, 2))
            self._release(held, token, {})
            return RetryLater(str(exc), countdown)
        except PaymentServiceError as exc:
            bound.info(f"{self.name}.failed", code=exc.code, status=exc.status_code)
            return self._failed(held, exc)
        finally:
            stripe.flush()
        return self._settle(held, outcome, token, bound)

    def reconcile_round(self) -> dict[str, int]:
        """One maintenance round over the ones whose outcome is unknown: found at Stripe,
        adopted; not found while Stripe answers, failed as not done; Stripe still unreachable,
        looked at again later (doubling from RECONCILE_BACKOFF_SECONDS up to
        RECONCILE_BACKOFF_MAX_SECONDS) and the round stops. Kill Bill's janitor for UNKNOWN
        transactions is the model. Returns how many were settled, postponed and skipped."""
        counts = {"settled": 0, "postponed": 0, "skipped": 0}
        for key in self._due_unknown(limit=RECONCILE_BATCH):
            token = secrets.token_hex(8)
            held = self._hold(key, token=token)
            if held is None:
                counts["skipped"] += 1
                continue
            bound = log.bind(**self._log_fields(held))
            stripe = self._stripe(held, token, None)
            try:
                found = self._look_up(held, stripe)
            except (TransientStripeError, PaymentServiceError, LeaseLost) as exc:
                delay = backoff(
                    held.reconcile_attempts,
                    base=self._settings.reconcile_backoff_seconds,
                    cap=self._settings.reconcile_backoff_max_seconds,
                )
                self._postpone(held, token, check_at=time.time() + delay)
                bound.info(f"{self.name}.reconcile_postponed", reason=str(exc),
                           next_in=round(delay, 1))  # fmt: skip
                counts["postponed"] += 1
                break  # Stripe is still unreachable: the next round tries again
            finally:
                stripe.flush()
            if found is None:
                bound.warning(f"{self.name}.not_at_stripe")
                self._not_done(held)
            else:
                self._settle(held, found, None, bound)
            counts["settled"] += 1
        return counts

    def _stripe(self, held: HeldT, token: str, delivery_tag: str | None) -> MeteredStripe:
        keepalive = self._keepalive(held, token, delivery_tag)
        return MeteredStripe(self._budget, self._metrics, keepalive=keepalive)

    def _attempt(self, held: HeldT, stripe: MeteredStripe) -> OutcomeT:
        if self._at_stripe(held):
            stripe.plan(self.retrieve_call)
            return self._retrieve(held, stripe)
        reconcile = held.attempts > 1 or self._reconcile_first(held)
        first = (self.find_call,) if reconcile else ()
        stripe.plan(*first, *self._calls_before_write(held), self._write_call(held))
        if reconcile:
            found = self._look_up(held, stripe)
            if found is not None:
                return found
        try:
            return self._write(held, stripe)
        except UpstreamError as exc:
            # Stripe saw this key with other parameters: what did that request do?
            found = self._look_up(held, stripe) if exc.code == "idempotency_error" else None
            if found is None:
                raise
            return found

    def _look_up(self, held: HeldT, stripe: MeteredStripe) -> OutcomeT | None:
        found = self._find(held, stripe)
        if found is not None:
            log.info(f"{self.name}.reconciled", **{f"{self.noun}_id": held.id},
                     **self._stripe_ids(found))  # fmt: skip
        return found

    def _give_up(self, held: HeldT, stripe: MeteredStripe, bound: Any) -> Done[StatusT]:
        """Retries ran out: say "not done" only if Stripe confirms it, else "unknown"."""
        try:
            found = self._look_up(held, stripe)
        except (TransientStripeError, PaymentServiceError, LeaseLost) as exc:
            bound.warning(f"{self.name}.outcome_unknown", reason=str(exc))
            return self._unknown(held, Verdict(None), check_at=self._next_look())
        if found is not None:
            settled = self._settle(held, found, None, bound)
            assert isinstance(settled, Done)  # without a token nothing is retried
            return settled
        bound.warning(f"{self.name}.gave_up", attempts=held.attempts)
        return self._not_done(held)

    def _settle(
        self, held: HeldT, outcome: OutcomeT, token: str | None, bound: Any
    ) -> Done[StatusT] | RetryLater:
        """Record what Stripe says; while Stripe is still at it, look again shortly under a
        lease (``token``), or else leave it ``unknown`` for the reconciler."""
        verdict = self._verdict(outcome)
        stripe_ids = self._stripe_ids(outcome)
        if verdict.status is not None:
            bound.info(f"{self.name}.{verdict.status.value}", **stripe_ids)
            return self._record(held, verdict)
        if token is not None:
            self._release(held, token, verdict.fields)
            return RetryLater(self.in_flight, IN_FLIGHT_RECHECK_SECONDS)
        bound.info(f"{self.name}.unknown", **stripe_ids)
        return self._unknown(held, verdict, check_at=self._next_look())

    def _next_look(self) -> float:
        return time.time() + self._settings.reconcile_backoff_seconds
