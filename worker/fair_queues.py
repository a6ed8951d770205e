"""Fair drain: workers take the clients' charges in weighted turns, no faster than the Stripe
budget lets them go out.

Each client's charges wait in a queue of their own, ``{QUEUE_NAME}.{client}``
(``shared.store.keys.client_queue``), pushed by the accept script, which also names the queue
in ``payments:queues``. What kombu and Celery already do is used as it is:
- a Celery worker consumes many queues, and ``Consumer.add_task_queue`` (what the
  ``add_consumer`` control command runs) adds one while it runs;
- kombu's Redis transport pops with one BRPOP over all of a worker's queues, in the order its
  queue cycle gives (Redis answers from the first that holds a message), and tells the cycle
  which queue answered (``rotate``).

Three parts are ours, where they cannot do it:
- ``ClientQueues`` (a consumer bootstep): a worker that consumes QUEUE_NAME consumes every
  client's queue, those named in ``payments:queues``, read as it starts and every
  ``REFRESH_SECONDS``. ``-Q`` at start cannot name clients that do not exist yet, and no
  worker needs the client list to find them.
- ``WeightedTurns`` (the queue cycle): kombu's round robin gives each queue with messages one
  turn in N; API_CLIENTS' ``weight`` asks for turns in proportion. Stride scheduling: each
  client queue has a pass, BRPOP names them by pass, the queue that answered moves on by
  1/weight, and the queues named before it (they were empty) are lifted to its pass, so an idle
  client saves no credit and is first in line as soon as it has a charge. The service's own
  queues (QUEUE_NAME: refunds, Stripe events; the callbacks) come before the clients' turns.
- Pacing (``may_take``): Celery hands each thread one message. Under STRIPE_MAX_RPS threads
  wait for budget slots in the order they booked them, so a pool full of one client's charges
  would make another's wait for the whole pool, whatever the queue order. A worker takes
  another message only while the budget is booked less than STRIPE_BUDGET_LOOKAHEAD_SECONDS
  ahead (``worker.transport``'s QoS asks); the backlog waits in the queues, where turns apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis
import structlog
from celery import bootsteps

from shared.redis_clients import sync_redis
from shared.settings.api_clients import load
from shared.settings.service_settings import Settings, get_settings
from shared.store import keys
from shared.stripe.budget import StripeBudget

log = structlog.get_logger(__name__)

# How often a worker looks for client queues it does not consume yet: the longest a new
# client's first charge waits for a worker to notice its queue.
REFRESH_SECONDS = 1.0
# How often the event loop wakes while paced, to take the next message once the budget allows.
PACING_TICK_SECONDS = 0.05


class WeightedTurns:
    """kombu's queue cycle (``update``, ``consume``, ``rotate``), in weighted turns between
    the client queues (names starting with ``client_prefix``) after the others."""

    def __init__(self, client_prefix: str = "", weights: Mapping[str, float] | None = None) -> None:
        self.items: list[str] = []  # BRPOP's order
        self._prefix = client_prefix
        self._weights = dict(weights or {})
        self._pass: dict[str, float] = {}

    def _is_client(self, queue: str) -> bool:
        return bool(self._prefix) and queue.startswith(self._prefix)

    def _order(self, queue: str) -> tuple[bool, float]:
        return (self._is_client(queue), self._pass.get(queue, 0.0))

    def update(self, queues: Iterable[str]) -> None:
        """The queues consumed now; a new one starts level with the most served queue's
        turn still to come (no credit, no debt)."""
        wanted = list(dict.fromkeys(queues))
        passes = [p for q, p in self._pass.items() if self._is_client(q)]
        floor = min(passes, default=0.0)
        self._pass = {q: self._pass.get(q, floor) for q in wanted}
        kept = [q for q in self.items if q in self._pass]
        self.items[:] = sorted([q for q in wanted if q not in kept] + kept, key=self._order)

    def consume(self, n: int) -> list[str]:
        return self.items[:n]

    def rotate(self, last_used: str) -> str:
        """``last_used`` answered BRPOP: the queues named before it were empty."""
        if last_used not in self._pass:
            return last_used
        position = self.items.index(last_used)
        if self._is_client(last_used):
            at = self._pass[last_used]
            for queue in self.items[:position]:
                if self._is_client(queue):
                    self._pass[queue] = max(self._pass[queue], at)
            self._pass[last_used] = at + 1 / self._weights.get(last_used, 1.0)
        self.items.append(self.items.pop(position))  # equal passes: served longest ago first
        self.items.sort(key=self._order)
        return last_used


def transport_options(settings: Settings) -> dict[str, Any]:
    """What ``worker.transport``'s channel reads to order its queues: the client queues'
    prefix and each configured client's weight."""
    weights = {
        keys.client_queue(settings.queue_name, client.name): client.weight
        for client in load(settings).clients
        if client.weight != 1
    }
    return {"client_prefix": keys.client_queue(settings.queue_name, ""), "weights": weights}


# --- pacing --------------------------------------------------------------------------------

_paced: list[tuple[StripeBudget, float]] = []


def pace_by(budget: StripeBudget, lookahead_seconds: float) -> None:
    """Take messages only while ``budget`` is booked less than ``lookahead_seconds`` ahead."""
    if budget.enabled:
        _paced[:] = [(budget, lookahead_seconds)]


def may_take() -> bool:
    """Whether the worker may take another message now."""
    return all(budget.booked_ahead() <= lookahead for budget, lookahead in _paced)


# --- discovery -----------------------------------------------------------------------------


class ClientQueues(bootsteps.StartStopStep):
    """A worker that consumes QUEUE_NAME also consumes every client's queue."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._settings = get_settings()
        self._redis: redis.Redis | None = None
        self._timer: Any = None

    def start(self, c: Any) -> None:
        if self._settings.queue_name not in _queue_names(c):
            return  # a worker for other queues only (-Q callbacks)
        self.refresh(c)
        self._timer = c.timer.call_repeatedly(REFRESH_SECONDS, self.refresh, (c,))

    def stop(self, c: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def refresh(self, c: Any) -> None:
        if self._redis is None:
            self._redis = sync_redis(self._settings)
        try:
            members: set[bytes] = self._redis.smembers(keys.CLIENT_QUEUES)  # type: ignore[assignment]
        except redis.RedisError as exc:
            log.warning("fair_queues.unlisted", error=type(exc).__name__)
            return
        consumed = _queue_names(c)
        for queue in sorted(member.decode() for member in members):
            if queue not in consumed:
                c.add_task_queue(queue)


def _queue_names(c: Any) -> set[str]:
    """The queues the worker's task consumer takes from (or will, once its loop starts)."""
    return {queue.name for queue in c.task_consumer.queues}
