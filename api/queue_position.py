"""Where a queued payment stands: how many of its client's charges wait before it, and when its
charge is expected to be sent to Stripe. Both are estimates, and say so.

Position without reading the queue: the accept script numbers each of a client's payments
(``queue_seq``, from the client's accepted count) and knows the queue's length as it pushes.
A client's queue is first in, first out, so the charges after a payment that still wait are
all those accepted after it: ``ahead = waiting - 1 - (accepted_now - queue_seq)``. That is one
LLEN and one HGET on GET /payments/{id}, nothing more on the accept (its script returns both
figures). Messages pushed again (the recovery sweep, a replay) make it approximate.

Drain rate: how many of the client's charges left its queue lately (``accepted - waiting``,
sampled by each accept and GET of this process, over DRAIN_WINDOW_SECONDS, since the queue
last ran empty: a sample after which everything then waiting had left by the next may have
an idle queue between them, which says nothing of how fast a backlog drains), which already
reflects the client's share of the workers and of the Stripe budget. With no such history,
the Stripe budget (its binding limit for the calls a charge books: shared.stripe.limits)
stands in, as if the client had it to itself: optimistic when others have backlogs too.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from api.schemas import QueueFigures
from shared.payments.payment_records import PaymentRecord, iso_from_ms
from shared.stripe.limits import RateLimits

DRAIN_WINDOW_SECONDS = 60.0
# Samples closer together than this add nothing; a rate needs this much time between samples.
SAMPLE_SPACING_SECONDS = 0.5
MIN_SPAN_SECONDS = 2.0
MAX_SAMPLES = 256


class QueueEstimates:
    def __init__(self, limits: RateLimits, *, clock: Callable[[], float] = time.time) -> None:
        self._limits = limits
        self._clock = clock
        # A client's looks at its queue: (when, how many had left it, how many waited).
        self._samples: dict[str, deque[tuple[float, int, int]]] = {}

    def now(self) -> float:
        return self._clock()

    def observe(
        self, client: str, *, accepted: int, waiting: int, now: float | None = None
    ) -> None:
        """One look at the client's queue: ``accepted`` so far, ``waiting`` in it now (at
        ``now``, else the clock's now)."""
        now = self._clock() if now is None else now
        samples = self._samples.setdefault(client, deque(maxlen=MAX_SAMPLES))
        if samples and now - samples[-1][0] < SAMPLE_SPACING_SECONDS:
            return
        taken = accepted - waiting
        if samples and taken - samples[-1][1] >= samples[-1][2]:
            # All that waited at the last look has left since: the queue may have stood
            # empty between the two, so the rate starts afresh here.
            samples.clear()
        samples.append((now, taken, waiting))
        while samples and now - samples[0][0] > DRAIN_WINDOW_SECONDS:
            samples.popleft()

    def drain_rate(self, client: str, *, calls_per_charge: int = 1) -> float | None:
        """Charges a second leaving the client's queue while it had a backlog: observed, else
        the Stripe budget's."""
        samples = self._samples.get(client)
        if samples and len(samples) > 1:
            (t0, taken0, _), (t1, taken1, _) = samples[0], samples[-1]
            if t1 - t0 >= MIN_SPAN_SECONDS and taken1 > taken0:
                return (taken1 - taken0) / (t1 - t0)
        if self._limits.enabled:
            return self._limits.charges_per_second(reads_customer=calls_per_charge > 1)
        return None

    def standing(self, record: PaymentRecord, *, ahead: int) -> QueueFigures:
        """The answer's ``queue`` for a payment with ``ahead`` charges before it."""
        ahead = max(0, ahead)
        rate = self.drain_rate(record.client or "", calls_per_charge=_calls_per_charge(record))
        return _standing(ahead, rate, self._clock())

    def at_accept(self, record: PaymentRecord, *, ahead: int, seq: int) -> QueueFigures:
        """A new payment, from what the accept script said (no further Redis call)."""
        if record.client and seq > 0:
            self.observe(record.client, accepted=seq, waiting=ahead + 1)
        return self.standing(record, ahead=ahead)

    def accepts(self) -> AcceptEstimates:
        """:meth:`at_accept` for the new payments of one accept call (a batch), its shared
        part done once."""
        return AcceptEstimates(self)

    def from_queue(self, record: PaymentRecord, *, waiting: int, accepted: int) -> QueueFigures:
        """A queued payment, from its client's queue as read now (AsyncPaymentStore.
        queue_standing)."""
        if record.client:
            self.observe(record.client, accepted=accepted, waiting=waiting)
        newer = accepted - record.queue_seq if record.queue_seq else 0
        return self.standing(record, ahead=min(waiting, waiting - 1 - max(0, newer)))


class AcceptEstimates:
    """``QueueEstimates.at_accept`` for the new payments of one accept call, as at one instant:
    the clock read once, each client's queue observed once (the first payment's figures: a
    script call's payments all see the same count of charges taken from the queue, and a
    second sample that soon would be dropped), its drain rate worked out once for each kind of
    charge; each payment's own place and estimated time from those."""

    def __init__(self, queues: QueueEstimates) -> None:
        self._queues = queues
        self._now = queues.now()
        self._observed: set[str] = set()
        self._rates: dict[tuple[str, int], float | None] = {}

    def at_accept(self, record: PaymentRecord, *, ahead: int, seq: int) -> QueueFigures:
        client = record.client or ""
        if record.client and seq > 0 and client not in self._observed:
            self._queues.observe(client, accepted=seq, waiting=ahead + 1, now=self._now)
            self._observed.add(client)
            self._rates.clear()  # a rate worked out before this sample is stale
        calls = _calls_per_charge(record)
        try:
            rate = self._rates[client, calls]
        except KeyError:
            rate = self._rates[client, calls] = self._queues.drain_rate(
                client, calls_per_charge=calls
            )
        return _standing(max(0, ahead), rate, self._now)


def _calls_per_charge(record: PaymentRecord) -> int:
    """A charge without its payment method reads the customer first: two calls."""
    return 1 if record.payment_method else 2


def _standing(ahead: int, rate: float | None, now: float) -> QueueFigures:
    """The answer's ``queue`` for a payment with ``ahead`` charges before it, at ``now``."""
    at = None
    if rate:
        at = iso_from_ms(int((now + (ahead + 1) / rate) * 1000))
    return QueueFigures(ahead, at)
