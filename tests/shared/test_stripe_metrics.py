"""A worker's Stripe call timings: counted in the process, written to Redis by a flush (every
STRIPE_METRICS_FLUSH_SECONDS and as the worker stops), read by the API's GET /metrics."""

from __future__ import annotations

import threading

import fakeredis
import pytest
import redis

from shared.fleet_metrics import STRIPE_CALLS, StripeCallMetrics, StripeMetricsFlusher


def _stored(client: redis.Redis) -> dict[str, float]:
    stored: dict[bytes, bytes] = client.hgetall(STRIPE_CALLS)  # type: ignore[assignment]
    return {field.decode(): float(value) for field, value in stored.items()}


def test_a_flush_writes_what_every_thread_counted_since_the_last() -> None:
    client = fakeredis.FakeRedis()
    metrics = StripeCallMetrics(client)

    def charges() -> None:
        for _ in range(100):
            metrics.record_many(
                [("customers.retrieve", 0.15, "ok"), ("payment_intents.create", 0.25, "ok")]
            )

    threads = [threading.Thread(target=charges) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _stored(client) == {}  # nothing written until the flush

    metrics.flush()
    metrics.record_many([("payment_intents.create", 40.0, "TransientStripeError")])
    metrics.flush()
    metrics.flush()  # nothing new: nothing written twice

    stored = _stored(client)
    assert stored["customers.retrieve|ok|0.2"] == 800
    assert stored["payment_intents.create|ok|0.3"] == 800
    assert stored["payment_intents.create|ok|sum"] == pytest.approx(200.0)
    assert stored["payment_intents.create|TransientStripeError|+Inf"] == 1
    assert stored["payment_intents.create|TransientStripeError|sum"] == pytest.approx(40.0)


def test_a_flush_redis_refuses_never_reaches_the_charge_and_later_ones_write() -> None:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    metrics = StripeCallMetrics(client)
    flusher = StripeMetricsFlusher(metrics, interval=60)

    metrics.record_many([("customers.retrieve", 0.1, "ok")])
    server.connected = False
    flusher._flush()  # logged and dropped, as a failed write always was
    server.connected = True
    metrics.record_many([("customers.retrieve", 0.1, "ok")])
    metrics.flush()

    assert _stored(client)["customers.retrieve|ok|0.1"] == 1


def test_the_flusher_writes_on_its_interval_and_once_more_as_it_stops() -> None:
    client = fakeredis.FakeRedis()
    metrics = StripeCallMetrics(client)
    flusher = StripeMetricsFlusher(metrics, interval=0.05)
    flusher.start()
    metrics.record_many([("customers.retrieve", 0.1, "ok")])
    for _ in range(200):
        if _stored(client):
            break
        threading.Event().wait(0.01)
    assert _stored(client)["customers.retrieve|ok|0.1"] == 1  # on the interval

    flusher.stop()
    slow = StripeMetricsFlusher(metrics, interval=3600)  # never flushes on its interval here
    slow.start()
    metrics.record_many([("customers.retrieve", 0.1, "ok")])
    slow.stop()
    assert not slow.is_alive()
    assert _stored(client)["customers.retrieve|ok|0.1"] == 2  # the last ones, at the stop
