"""Metrics: counted where they happen, exposed by the API's ``GET /metrics`` (Prometheus text).

Workers have no HTTP port (they scale by the dozen, behind nothing), so what they count goes to
Redis, aggregated across every worker as it is written (HINCRBY in a pipeline, or inside the
script that records an outcome), and the API reads it at scrape time. One scrape target sees the
whole fleet, with no Pushgateway to run and nothing lost when a worker is scaled in. The API's
own numbers (accept latency) are ordinary in-process prometheus-client metrics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson
import redis
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from shared.store import keys
from shared.store.stripe_budget_store import BudgetState

log = structlog.get_logger(__name__)

# Where the counts live (see shared.store.keys): ACCEPTED a counter, OUTCOMES "status|code" ->
# count, STRIPE_CALLS "call|outcome|le" -> count and "call|outcome|sum" -> seconds.
ACCEPTED = keys.ACCEPTED_COUNT
OUTCOMES = keys.OUTCOME_COUNTS
STRIPE_CALLS = keys.STRIPE_CALL_STATS
STRIPE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

ACCEPT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# Unix time of the last maintenance round (written by whichever worker ran it, every 30 s).
WORKER_HEARTBEAT = keys.WORKER_HEARTBEAT


def outcome_field(status: str, code: str | None) -> str:
    return f"{status}|{code or ''}"


class StripeCallMetrics:
    """Times each Stripe call of a worker and counts it by outcome, into Redis.

    Calls are counted in the process and written by ``flush`` in one round trip, which a worker
    runs every STRIPE_METRICS_FLUSH_SECONDS (``StripeMetricsFlusher``) and once more as it
    stops: one round trip a second instead of one a charge, a sizeable share of a charge's CPU
    (docs/PERFORMANCE.md, drain). What a flush cannot write (Redis unreachable) is dropped:
    metrics never hold up or fail a charge.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._sums: dict[str, float] = {}

    def record_many(self, timings: list[tuple[str, float, str]]) -> None:
        """(call, seconds, outcome) triples, counted here until the next flush."""
        with self._lock:
            for call, seconds, outcome in timings:
                prefix = f"{call}|{outcome}|"
                bucket = prefix + next((str(b) for b in STRIPE_BUCKETS if seconds <= b), "+Inf")
                self._counts[bucket] = self._counts.get(bucket, 0) + 1
                self._sums[prefix + "sum"] = self._sums.get(prefix + "sum", 0.0) + seconds

    def flush(self) -> None:
        """What was counted since the last flush, into Redis in one round trip."""
        with self._lock:
            counts, self._counts = self._counts, {}
            sums, self._sums = self._sums, {}
        if not counts:
            return
        with self._client.pipeline(transaction=False) as pipe:
            for field, count in counts.items():
                pipe.hincrby(STRIPE_CALLS, field, count)
            for field, seconds in sums.items():
                pipe.hincrbyfloat(STRIPE_CALLS, field, seconds)
            pipe.execute()


class StripeMetricsFlusher(threading.Thread):
    """Flushes a worker's StripeCallMetrics every ``interval`` seconds, and once as it stops."""

    def __init__(self, metrics: StripeCallMetrics, *, interval: float) -> None:
        super().__init__(name="stripe-metrics-flusher", daemon=True)
        self._metrics = metrics
        self._interval = interval
        self._stop_event = threading.Event()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        self.join(timeout)

    def _flush(self) -> None:
        try:
            self._metrics.flush()
        except redis.RedisError as exc:
            log.warning("metrics.unrecorded", error=type(exc).__name__)

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            self._flush()
        self._flush()


class ApiMetrics:
    """The API process's own metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.accept_seconds = Histogram(
            "payments_accept_seconds",
            "Time to accept POST /payments (validation, the Redis script, the answer)",
            buckets=ACCEPT_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "payments_http_requests",
            "Answers given by this API process, by route template, method and status",
            labelnames=["route", "method", "status"],
            registry=self.registry,
        )
        # Its labelled children, by (route, method, status): bounded by the routes, methods
        # and statuses there are; looked up here rather than through labels() per request.
        self._http_children: dict[tuple[str, str, int], Any] = {}

    def count_answer(self, route: str, method: str, status: int) -> None:
        key = (route, method, status)
        child = self._http_children.get(key)
        if child is None:
            child = self._http_children[key] = self.http_requests.labels(route, method, str(status))
        child.inc()


class FleetCollector(Collector):
    """Renders what the workers counted in Redis, read just before a scrape."""

    def __init__(self) -> None:
        self.outcomes: Mapping[bytes, bytes] = {}
        self.stripe: Mapping[bytes, bytes] = {}
        self.accepted = 0
        # ready (LLEN of every charge queue) + reserved (unacked, the callbacks' apart)
        self.queue_depth = 0
        self.queue_reserved = 0
        self.callbacks_reserved = 0
        self.queue_lengths: Mapping[str, int] = {}  # ready, by queue (QUEUE_NAME, each client's)
        self.queue_oldest_age = 0.0
        self.dead_letters = 0
        self.worker_heartbeat: float | None = None
        # Stripe webhooks (``type|outcome``), moves after the first answer
        # (``from|to``), callbacks (``outcome``).
        self.webhooks: Mapping[bytes, bytes] = {}
        self.transitions: Mapping[bytes, bytes] = {}
        self.callbacks: Mapping[bytes, bytes] = {}
        # Per client: ``client|accepted``, ``client|limited``, ``client|backlog_full``.
        self.clients: Mapping[bytes, bytes] = {}
        # The Stripe budget: each limit (global, every endpoint) with its rate now, the calls
        # booked on it and the 429s Stripe answered (shared.store.stripe_budget_store).
        self.budget: Sequence[BudgetState] = ()
        self.budget_enabled = False
        # False when Redis did not answer the scrape: only payments_redis_up 0 is rendered (no
        # made-up zeros for the figures that live in Redis).
        self.redis_up = True

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily(
            "payments_redis_up", "1 if Redis answered this scrape, else 0",
            value=1 if self.redis_up else 0,
        )  # fmt: skip
        if not self.redis_up:
            return
        accepted = CounterMetricFamily(
            "payments_accepted", "Payments accepted (new, not replays)", labels=[]
        )
        accepted.add_metric([], self.accepted)
        yield accepted

        outcomes = CounterMetricFamily(
            "payments_outcomes", "Final outcomes recorded by workers", labels=["status", "code"]
        )
        for field, count in sorted(self.outcomes.items()):
            status, _, code = field.decode().partition("|")
            outcomes.add_metric([status, code], int(count))
        yield outcomes

        yield GaugeMetricFamily(
            "payments_queue_depth",
            "Charges not yet done: waiting in the queue plus reserved by workers, unacknowledged",
            value=self.queue_depth,
        )
        yield GaugeMetricFamily(
            "payments_queue_reserved",
            "Of payments_queue_depth: messages reserved by workers (running, prefetched, or "
            "waiting for a retry countdown), not yet acknowledged",
            value=self.queue_reserved,
        )
        yield GaugeMetricFamily(
            "payments_callbacks_reserved",
            "Callback messages reserved by workers, not yet acknowledged (being delivered, or "
            "prefetched); not counted in payments_queue_depth",
            value=self.callbacks_reserved,
        )
        waiting = GaugeMetricFamily(
            "payments_queue_waiting",
            "Of payments_queue_depth: messages waiting, by queue (QUEUE_NAME, and each "
            "client's charges in QUEUE_NAME.<client>)",
            labels=["queue"],
        )
        for name, length in sorted(self.queue_lengths.items()):
            waiting.add_metric([name], length)
        yield waiting
        yield GaugeMetricFamily(
            "payments_queue_oldest_age_seconds",
            "Age of the payment that has waited longest at the head of a queue (0 when every "
            "queue is empty)",
            value=self.queue_oldest_age,
        )
        if self.worker_heartbeat is not None:
            yield GaugeMetricFamily(
                "payments_worker_heartbeat_timestamp_seconds",
                "Unix time of the workers' last maintenance round (one worker every 30 s)",
                value=self.worker_heartbeat,
            )
        yield GaugeMetricFamily(
            "payments_dead_letters", "Payments failed for Stripe being down, kept for replay",
            value=self.dead_letters,
        )  # fmt: skip

        yield from self._stripe_histograms()
        yield from self._stripe_budget()
        yield from self._lifecycle()

    def _stripe_budget(self) -> Iterator[Any]:
        limits = GaugeMetricFamily(
            "payments_stripe_budget_limit",
            "The Stripe budget's configured limit, requests/s for the whole fleet: the "
            "account's (global) and each endpoint's (STRIPE_RATE_LIMITS, STRIPE_MAX_RPS, "
            "Stripe's published defaults)",
            labels=["limit"],
        )
        rates = GaugeMetricFamily(
            "payments_stripe_budget_rate",
            "The rate the budget books now, requests/s: the limit, or less for a while after "
            "a 429 from Stripe (cut to 0.7x, growing back 0.5/s every second)",
            labels=["limit"],
        )
        booked = CounterMetricFamily(
            "payments_stripe_budget_booked",
            "Stripe calls booked on each limit's budget",
            labels=["limit"],
        )
        limited = CounterMetricFamily(
            "payments_stripe_rate_limited",
            "429s from Stripe, by the limit they cut (an endpoint, or global when Stripe said "
            "the account's limit was passed)",
            labels=["limit"],
        )
        for state in self.budget:
            if self.budget_enabled:
                limits.add_metric([state.name], state.limit)
                rates.add_metric([state.name], state.rate)
            booked.add_metric([state.name], state.booked)
            limited.add_metric([state.name], state.rate_limited)
        yield from (limits, rates, booked, limited)

    def _lifecycle(self) -> Iterator[Any]:
        webhooks = CounterMetricFamily(
            "payments_stripe_webhooks",
            "Stripe webhook events by type (handled ones; other for the rest) and outcome "
            "(received, duplicate, ignored, caught_up, applied, unchanged, not_ours, ...)",
            labels=["type", "outcome"],
        )
        for field, count in sorted(self.webhooks.items()):
            kind, _, outcome = field.decode().partition("|")
            webhooks.add_metric([kind, outcome], int(count))
        yield webhooks
        transitions = CounterMetricFamily(
            "payments_transitions",
            "Payments moved after the charge path's first answer (3-D Secure, refunds, "
            "disputes, late outcomes)",
            labels=["from_status", "to_status"],
        )
        for field, count in sorted(self.transitions.items()):
            was, _, now = field.decode().partition("|")
            transitions.add_metric([was, now], int(count))
        yield transitions
        callbacks = CounterMetricFamily(
            "payments_callbacks", "Callback deliveries by outcome", labels=["outcome"]
        )
        for field, count in sorted(self.callbacks.items()):
            callbacks.add_metric([field.decode()], int(count))
        yield callbacks

        clients = CounterMetricFamily(
            "payments_client_requests",
            "Per client: payments accepted, requests over its rate (limited), refused for its "
            "share of the backlog (backlog_full)",
            labels=["client", "outcome"],
        )
        for field, count in sorted(self.clients.items()):
            client, _, outcome = field.decode().rpartition("|")
            clients.add_metric([client, outcome], int(count))
        yield clients

    def _stripe_histograms(self) -> Iterator[Any]:
        series: dict[tuple[str, str], dict[str, float]] = {}
        for raw_field, raw_value in self.stripe.items():
            call, outcome, part = raw_field.decode().split("|")
            series.setdefault((call, outcome), {})[part] = float(raw_value)
        family = HistogramMetricFamily(
            "payments_stripe_request_seconds",
            "Stripe calls made by workers, by call and outcome (ok or the error type)",
            labels=["call", "outcome"],
        )
        for (call, outcome), parts in sorted(series.items()):
            running = 0.0
            buckets = []
            for bound in (*map(str, STRIPE_BUCKETS), "+Inf"):
                running += parts.get(bound, 0.0)
                buckets.append((bound, running))
            family.add_metric([call, outcome], buckets, parts.get("sum", 0.0))
        yield family


def message_wait_seconds(message: bytes | None, *, now: float | None = None) -> float | None:
    """How long a queued task message has waited, from its ``enqueued_at`` header (ms, stamped
    on every message the service enqueues); 0 for no message, None if it carries no stamp."""
    if not message:
        return 0.0
    try:
        stamp = orjson.loads(message)["headers"].get("enqueued_at")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(stamp, int | float) or isinstance(stamp, bool) or stamp <= 0:
        return None
    return max(0.0, (time.time() if now is None else now) - stamp / 1000)


def emf_queue_depth(
    queue: str,
    depth: int,
    *,
    now: float | None = None,
    reserved: int | None = None,
    reserved_callbacks: int | None = None,
    oldest_age: float | None = None,
    dead_letters: int | None = None,
) -> str:
    """A CloudWatch Embedded Metric Format line: the autoscaling signal, with no AWS SDK call.

    ``depth`` counts ready and reserved charge messages (charge_queues: LLEN + the unacked
    ones not of the callback queue); ``reserved`` and ``reserved_callbacks`` (the callbacks'
    messages workers hold, not counted in ``depth``), when given, ride along as log fields (not
    metrics) so that the split can be read in the logs.
    ``oldest_age`` (OldestMessageAgeSeconds) and ``dead_letters`` (DeadLetters), when given, are
    metrics too: the ECS template's CloudWatch alarms read them."""
    metrics: list[dict[str, str]] = [{"Name": "QueueDepth", "Unit": "Count"}]
    values: dict[str, float | int] = {"QueueDepth": depth}
    if oldest_age is not None:
        metrics.append({"Name": "OldestMessageAgeSeconds", "Unit": "Seconds"})
        values["OldestMessageAgeSeconds"] = round(oldest_age, 3)
    if dead_letters is not None:
        metrics.append({"Name": "DeadLetters", "Unit": "Count"})
        values["DeadLetters"] = dead_letters
    if reserved is not None:
        values["Reserved"] = reserved
    if reserved_callbacks is not None:
        values["ReservedCallbacks"] = reserved_callbacks
    return orjson.dumps(
        {
            "_aws": {
                "Timestamp": int((time.time() if now is None else now) * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": "PaymentsService",
                        "Dimensions": [["Queue"]],
                        "Metrics": metrics,
                    }
                ],
            },
            "Queue": queue,
            **values,
        }
    ).decode()
