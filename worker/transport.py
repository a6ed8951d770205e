"""kombu's Redis transport, fixed for a Redis that dies while tasks are running, and cheaper;
its queues taken in weighted turns and paced by the Stripe budget (worker.fair_queues).

Seen with kombu 5.7 when Redis is killed mid-charge, each time killing the worker:
1. Celery closes the broken connection and kombu pushes the channel's unacknowledged messages
   back to the queue. That needs Redis and fails with an AttributeError (not a connection
   error): "Unrecoverable error: 'NoneType' object has no attribute 'hostname'".
2. A task that finishes after the reconnect acknowledges its message on the old, closed channel:
   "Unrecoverable error: 'NoneType' object has no attribute 'client'".
Here a closed channel neither restores nor acknowledges. The messages stay in the transport's
unacked hash (kept by Redis's AOF) and come back after the visibility timeout (~65 s), found by
any worker's sweep; a payment already charged is then skipped as final. The price: on a warm
shutdown, messages reserved but not started also wait for the visibility timeout instead of
returning at once (prefetch is one a thread, so few do).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import structlog
from kombu.transport import redis

from shared.settings.redis_url import PrimaryConnection, PrimarySSLConnection
from worker import fair_queues

log = structlog.get_logger(__name__)


class QoS(redis.QoS):
    def can_consume(self) -> bool:
        # Prefetch allowing, and the Stripe budget too (worker.fair_queues: pacing).
        return bool(super().can_consume()) and fair_queues.may_take()


class Channel(redis.Channel):
    QoS = QoS
    do_restore = False
    # A demoted primary's READONLY is a connection error: kombu reconnects.
    connection_class: Any = PrimaryConnection
    connection_class_ssl: Any = PrimarySSLConnection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The clients' queues in weighted turns (worker.fair_queues), instead of round robin.
        transport_options: dict[str, Any] = self.connection.client.transport_options or {}  # type: ignore[union-attr]
        options = transport_options.get("fair_queues") or {}
        self._queue_cycle = fair_queues.WeightedTurns(
            options.get("client_prefix", ""), options.get("weights")
        )

    @cached_property
    def _shared_client(self) -> Any:
        return self._create_client()  # type: ignore[attr-defined]

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        # kombu builds a new redis.Redis object for every ack and publish done without a client
        # at hand, a large share of a busy worker's CPU (docs/PERFORMANCE.md). A redis.Redis is
        # thread-safe (its pool hands each command a connection): one per channel serves all.
        yield client or self._shared_client

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        if self.connection is None:
            log.info("broker.ack_after_reconnect", delivery_tag=str(delivery_tag))
            return
        super().basic_ack(delivery_tag, multiple)

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if self.connection is None:
            log.info("broker.reject_after_reconnect", delivery_tag=str(delivery_tag))
            return
        super().basic_reject(delivery_tag, requeue)


def _wake_while_paced(transport: Any, loop: Any) -> None:
    # A paced worker takes its next message once the budget allows; nothing else would wake
    # its event loop then. Registered again after a reconnect: the old timer goes.
    old = getattr(transport, "_pacing_tref", None)
    if old is not None:
        old.cancel()
    transport._pacing_tref = loop.call_repeatedly(fair_queues.PACING_TICK_SECONDS, _tick)


def _tick() -> None:
    """Nothing: the event loop, woken, asks the QoS again whether to take a message."""


class Transport(redis.Transport):
    Channel = Channel

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        _wake_while_paced(self, loop)


# --- Sentinel: REDIS_URL's redis+sentinel:// form (shared.settings.redis_url.broker) runs the
# broker through kombu's Sentinel transport, with the same fixes: our Channel's methods come
# first, kombu's SentinelChannel then finds the primary (and finds it again after a failover).
class SentinelChannel(Channel, redis.SentinelChannel):
    # The Sentinel's connections (they ask for the primary, and READONLY reconnects already).
    connection_class: Any = redis.SentinelChannel.connection_class
    connection_class_ssl: Any = redis.SentinelChannel.connection_class_ssl


class SentinelTransport(redis.SentinelTransport):
    Channel = SentinelChannel

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        _wake_while_paced(self, loop)
