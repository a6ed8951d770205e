"""What a worker process makes once and shares between its threads: settings, Redis stores,
the Stripe gateway and budget, the call metrics, and the processors the tasks hand their ids to.

Each is made on first use (a task, or a maintenance round), so that importing the tasks (as
Flower and the tests do) opens no connection.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import redis

from shared.callbacks.events import payment_callback, refund_callbacks
from shared.fleet_metrics import StripeCallMetrics
from shared.payments.refund_records import RefundRecord
from shared.payments.states import RefundStatus, Status
from shared.redis_clients import sync_redis
from shared.settings.service_settings import get_settings
from shared.store import PaymentStore
from shared.store.callback_store import CallbackStore
from shared.store.capture_store import CaptureStore
from shared.store.lifecycle_store import LifecycleStore
from shared.store.refund_store import RefundStore
from shared.store.stripe_budget_store import StripeBudgetStore
from shared.stripe.budget import StripeBudget
from shared.stripe.gateway import StripeGateway
from worker.callback_delivery import CallbackSender
from worker.capture_attempts import CaptureProcessor
from worker.charge import ChargeProcessor
from worker.event_catchup import EventCatchUp
from worker.fair_queues import pace_by
from worker.refund_attempts import RefundProcessor
from worker.stripe_events import StripeEventProcessor

settings = get_settings()


@lru_cache(maxsize=1)
def store() -> PaymentStore:
    """One Redis pool per worker process, shared by its threads."""
    return PaymentStore(sync_redis(settings), settings)


@lru_cache(maxsize=1)
def lifecycle_store() -> LifecycleStore:
    return LifecycleStore(sync_redis(settings), settings)


@lru_cache(maxsize=1)
def refund_store() -> RefundStore:
    return RefundStore(sync_redis(settings), settings)


@lru_cache(maxsize=1)
def capture_store() -> CaptureStore:
    return CaptureStore(sync_redis(settings), settings)


@lru_cache(maxsize=1)
def callback_store() -> CallbackStore:
    return CallbackStore(sync_redis(settings), settings)


@lru_cache(maxsize=1)
def gateway() -> StripeGateway:
    """One Stripe HTTP pool per worker process, shared by its threads."""
    return StripeGateway(settings)


_budget_lock = threading.Lock()
_budgets: list[StripeBudget] = []


def budget() -> StripeBudget:
    """The Stripe request budget every worker process books calls from; the worker takes
    messages at its pace (worker.fair_queues). One per process, made under a lock: the
    maintenance thread and the first tasks ask for it at once, and a second one would book
    while the first, never booking, paced the worker."""
    with _budget_lock:
        if not _budgets:
            shared = StripeBudget(StripeBudgetStore(sync_redis(settings)), settings.stripe_limits)
            pace_by(shared, settings.stripe_budget_lookahead_seconds)
            _budgets.append(shared)
        return _budgets[0]


@lru_cache(maxsize=1)
def stripe_metrics() -> StripeCallMetrics:
    """The Stripe call timings of every task of this process, flushed to Redis every
    STRIPE_METRICS_FLUSH_SECONDS by a thread started with the worker (worker.maintenance)."""
    return StripeCallMetrics(sync_redis(settings))


def payment_callback_message(payment_id: str, status: Status) -> bytes:
    return payment_callback(settings, payment_id, status)


def refund_callback_messages(refund: RefundRecord, status: RefundStatus) -> tuple[bytes, bytes]:
    return refund_callbacks(settings, refund, status)


@lru_cache(maxsize=1)
def charge_processor() -> ChargeProcessor:
    return ChargeProcessor(store(), gateway(), settings, budget(), stripe_metrics())


@lru_cache(maxsize=1)
def refund_processor() -> RefundProcessor:
    return RefundProcessor(
        refund_store(),
        lifecycle_store(),
        gateway(),
        settings,
        budget(),
        stripe_metrics(),
        refund_callback_messages,
    )


@lru_cache(maxsize=1)
def capture_processor() -> CaptureProcessor:
    return CaptureProcessor(
        capture_store(), gateway(), settings, budget(), stripe_metrics(), payment_callback_message
    )


@lru_cache(maxsize=1)
def event_processor() -> StripeEventProcessor:
    return StripeEventProcessor(
        lifecycle_store(), gateway(), payment_callback_message, budget(), stripe_metrics()
    )


@lru_cache(maxsize=1)
def event_catchup() -> EventCatchUp:
    return EventCatchUp(lifecycle_store(), gateway(), settings, budget(), stripe_metrics())


@lru_cache(maxsize=1)
def callback_sender() -> CallbackSender:
    return CallbackSender(callback_store(), lifecycle_store(), refund_store(), settings)


@lru_cache(maxsize=1)
def maintenance_redis() -> redis.Redis:
    """A client of its own for the maintenance rounds' reads, so that the queue-depth line
    (the workers' heartbeat) never waits behind the tasks' connections."""
    return sync_redis(settings)
