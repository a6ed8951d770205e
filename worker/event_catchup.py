"""The catch-up round of Stripe's events: the net under webhooks that never arrived.

Stripe retries a webhook for three days, but an endpoint that was down longer, misconfigured
or verifying with a wrong secret has lost those events for good, and a dashboard refund or a
completed 3-D Secure would stay unseen. Stripe's answer is to list the events whose delivery did
not succeed (``GET /v1/events`` with ``delivery_success=false``: failed, or still pending).
Every STRIPE_EVENTS_CATCHUP_SECONDS one worker of the fleet (a turn in Redis, taken by the
worker whose maintenance round it is) lists those of the handled types and takes each through
the webhook's own step (``LifecycleStore.catch_up_stripe_event``: the same script and dedupe by
event id), so an event taken before, by its webhook or an earlier round, enqueues nothing, and
a new one runs the webhook's task, which fetches its object again.

How far it read is kept in Redis (``payments:stripe_events:cursor``): a window of creation
times is read newest first, a page of 100 events at a time, each page one call booked on the
fleet's Stripe budget; after each page the cursor is saved (the last event id read) and the
round's turn renewed, so a round cut short (its page limit, a stopped worker, Stripe
unreachable) resumes where it stopped. A window read to its end moves ``through`` to its upper
bound, and the next window starts OVERLAP_SECONDS before it, so an event Stripe lists a little
late is still found (one found twice is harmless).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import structlog

from shared.errors import PaymentServiceError
from shared.fleet_metrics import StripeCallMetrics
from shared.settings.service_settings import Settings
from shared.store.keys import STRIPE_EVENT_TTL_SECONDS
from shared.store.lifecycle_store import LifecycleStore
from shared.stripe.budget import StripeBudget
from shared.stripe.gateway import StripeGateway
from shared.stripe.outcomes import HANDLED_EVENTS, TransientStripeError
from worker.stripe_calls import MeteredStripe

log = structlog.get_logger(__name__)

OVERLAP_SECONDS = 60
# A first round reads back as far as an event id is remembered (a second sight stays harmless).
FIRST_LOOKBACK_SECONDS = STRIPE_EVENT_TTL_SECONDS
RETENTION_SECONDS = 30 * 24 * 3600  # Stripe lists the events of the last 30 days
PAGES_PER_ROUND = 10


@dataclass(frozen=True, slots=True)
class Window:
    """Events created in [lower, upper], read newest first from after ``after``."""

    through: int  # what the cursor keeps until the window is read
    lower: int
    upper: int
    after: str | None


def window_of(cursor: dict[str, str], now: int) -> Window:
    """The window to read: the one left open, else a new one up to ``now``."""
    through = int(cursor.get("through") or now - FIRST_LOOKBACK_SECONDS)
    lower = max(through - OVERLAP_SECONDS, now - RETENTION_SECONDS)
    upper = int(cursor.get("window_end") or now)
    return Window(through, lower, upper, cursor.get("after") or None)


class EventCatchUp:
    def __init__(
        self,
        store: LifecycleStore,
        gateway: StripeGateway,
        settings: Settings,
        budget: StripeBudget,
        metrics: StripeCallMetrics | None = None,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._period = settings.stripe_events_catchup_seconds
        self._budget = budget
        self._metrics = metrics

    def run(self) -> dict[str, int]:
        """One round if it is due and this worker's turn; how many pages were read, events
        listed and events taken (found never taken before)."""
        counts = {"pages": 0, "listed": 0, "taken": 0}
        token = secrets.token_hex(8)
        if self._period <= 0 or not self._store.take_catchup_turn(token, seconds=self._period):
            return counts
        stripe = MeteredStripe(self._budget, self._metrics, keepalive=lambda: True)
        try:
            self._read(token, stripe, counts)
        finally:
            stripe.flush()
        if counts["taken"]:
            # Each one is a webhook the endpoint never took: worth an operator's look.
            log.warning("stripe_events.caught_up", **counts)
        return counts

    def _read(self, token: str, stripe: MeteredStripe, counts: dict[str, int]) -> None:
        win = window_of(self._store.catchup_cursor(), int(time.time()))
        after = win.after
        while counts["pages"] < PAGES_PER_ROUND:
            try:
                page = stripe.call(
                    "events.list",
                    self._gateway.list_events,
                    types=sorted(HANDLED_EVENTS),
                    created_gte=win.lower,
                    created_lte=win.upper,
                    starting_after=after,
                )
            except TransientStripeError as exc:
                log.info("stripe_events.postponed", reason=str(exc))
                return  # the next round resumes from the saved cursor
            except PaymentServiceError as exc:
                if after is None:
                    log.warning("stripe_events.refused", code=exc.code)
                    return
                # The event to resume after is gone (Stripe keeps 30 days): the window again.
                log.info("stripe_events.window_restarted", code=exc.code)
                after = None
                continue
            counts["pages"] += 1
            counts["listed"] += len(page.events)
            request_id = f"catchup-{token}"
            for event in page.events:
                if event.type in HANDLED_EVENTS and self._store.catch_up_stripe_event(
                    event, request_id=request_id
                ):
                    counts["taken"] += 1
            done = not page.has_more
            cursor = (
                {"through": str(win.upper), "window_end": "", "after": ""}
                if done
                else {"through": str(win.through), "window_end": str(win.upper),
                      "after": page.last_id or ""}
            )  # fmt: skip
            if not self._store.save_catchup_cursor(token, cursor, hold=self._period):
                log.warning("stripe_events.turn_lost")
                return
            if done:
                return
            after = page.last_id
