"""GET /metrics: what an operator's Prometheus sees, from the API and from the workers."""

from __future__ import annotations

import fakeredis
import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared.fleet_metrics import OUTCOMES, STRIPE_CALLS, emf_queue_depth
from shared.store.stripe_budget_store import AsyncStripeBudgetStore
from tests.support import payment

CREATE, READ = "POST /v1/payment_intents", "GET /v1/customers/{id}"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_show_accepts_outcomes_queue_and_stripe_calls(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    await client.post("/payments", json=payment())
    await client.post("/payments", json=payment(), headers={"Idempotency-Key": "k"})
    await client.post("/payments", json=payment(), headers={"Idempotency-Key": "k"})  # replay
    # What workers write (see worker.charge and shared.fleet_metrics.StripeCallMetrics):
    await redis.hincrby(OUTCOMES, "succeeded|", 3)
    await redis.hincrby(OUTCOMES, "failed|card_declined", 1)
    await redis.hincrby(STRIPE_CALLS, "payment_intents.create|ok|0.2", 2)
    await redis.hincrby(STRIPE_CALLS, "payment_intents.create|ok|+Inf", 1)
    await redis.hincrbyfloat(STRIPE_CALLS, "payment_intents.create|ok|sum", 1.5)
    await redis.hincrby(STRIPE_CALLS, "payment_intents.create|TransientStripeError|0.05", 1)
    await redis.hincrbyfloat(STRIPE_CALLS, "payment_intents.create|TransientStripeError|sum", 0.01)

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    assert got[("payments_accepted_total", ())] == 2
    assert got[("payments_accept_seconds_count", ())] == 3
    assert got[("payments_queue_depth", ())] == 2
    # The anonymous client's charges wait in its own queue, and count in the depth.
    assert got[("payments_queue_waiting", (("queue", "payments.anonymous"),))] == 2
    assert got[("payments_queue_waiting", (("queue", "payments"),))] == 0
    assert got[("payments_outcomes_total", (("code", ""), ("status", "succeeded")))] == 3
    assert got[("payments_outcomes_total", (("code", "card_declined"), ("status", "failed")))] == 1
    ok = (("call", "payment_intents.create"), ("outcome", "ok"))
    assert got[("payments_stripe_request_seconds_count", ok)] == 3
    assert got[("payments_stripe_request_seconds_bucket", (*ok[:1], ("le", "0.2"), ok[1]))] == 2
    assert got[("payments_stripe_request_seconds_sum", ok)] == 1.5
    errors = (("call", "payment_intents.create"), ("outcome", "TransientStripeError"))
    assert got[("payments_stripe_request_seconds_count", errors)] == 1


def test_the_queue_depth_line_is_cloudwatch_embedded_metric_format() -> None:
    import json

    line = json.loads(emf_queue_depth("payments", 42, now=1_700_000_000))
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "PaymentsService"
    assert directive["Dimensions"] == [["Queue"]]
    assert directive["Metrics"] == [{"Name": "QueueDepth", "Unit": "Count"}]
    assert line["_aws"]["Timestamp"] == 1_700_000_000_000
    assert line["Queue"] == "payments"
    assert line["QueueDepth"] == 42


async def test_metrics_show_each_stripe_limit_its_rate_its_use_and_the_429s(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    # What workers do: book calls, and report a 429 on the creates (one cut for the fleet).
    budget = AsyncStripeBudgetStore(redis)
    limits = {"global": 25.0, CREATE: 25.0, READ: 25.0}
    await budget.book([READ, CREATE], limits)
    await budget.book([READ, CREATE], limits)
    await budget.throttled(CREATE, 25.0)

    got = samples((await client.get("/metrics")).text)

    def of(name: str, limit: str) -> float:
        return got[(name, (("limit", limit),))]

    # A sandbox key (the tests'): 25/s for the account and each endpoint.
    assert of("payments_stripe_budget_limit", "global") == 25
    assert of("payments_stripe_budget_limit", CREATE) == 25
    assert 17.5 <= of("payments_stripe_budget_rate", CREATE) < 18  # cut to 0.7x by the 429
    assert of("payments_stripe_budget_rate", READ) == 25
    assert of("payments_stripe_budget_booked_total", "global") == 4
    assert of("payments_stripe_budget_booked_total", CREATE) == 2
    assert of("payments_stripe_rate_limited_total", CREATE) == 1
    assert of("payments_stripe_rate_limited_total", READ) == 0
