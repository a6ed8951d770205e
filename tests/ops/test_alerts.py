"""deploy/prometheus and deploy/grafana: the alert rules pass promtool and their unit tests,
every alert has a case where it fires and one where it stays quiet, the dashboard's queries
parse, and every metric either names is what GET /metrics really renders (including the figures
added for them: reserved messages, the oldest queued payment's age, the workers' heartbeat,
Redis reachability)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.celery_message import charge_message
from shared.fleet_metrics import OUTCOMES, STRIPE_CALLS, WORKER_HEARTBEAT
from shared.settings.service_settings import Settings
from shared.store.keys import CLIENT_COUNTS, DEAD_LETTERS, UNACKED, record_key

from ._tools import REPO, find_system_tool, load_yaml, run_tool

RULES_DIR = REPO / "deploy" / "prometheus"
RULES = RULES_DIR / "alerts.yml"
RULE_TESTS = RULES_DIR / "alerts_test.yml"
RUNBOOK = RULES_DIR / "README.md"
DASHBOARD = REPO / "deploy" / "grafana" / "payments.json"


def promtool(*args: str) -> str:
    path = find_system_tool("promtool", "prometheus")
    result = run_tool("promtool", *args, path=path)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def alert_rules() -> dict[str, Any]:
    rules = load_yaml(RULES)
    return {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}


def test_promtool_check_rules() -> None:
    out = promtool("check", "rules", str(RULES))
    assert "SUCCESS" in out


def test_promtool_unit_tests_pass() -> None:
    out = promtool("test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in out


def test_the_alerts_an_operator_needs_exist() -> None:
    assert set(alert_rules()) >= {
        "PaymentsDeadLettersGrowing",
        "PaymentsBacklogOld",
        "PaymentsFailureRatioHigh",
        "PaymentsStripeTransientErrors",
        "PaymentsNoWorkerAlive",
        "PaymentsQueueNotConsumed",
        "PaymentsRedisUnreachable",
    }


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = [c for t in load_yaml(RULE_TESTS)["tests"] for c in t.get("alert_rule_test", [])]
    for name in alert_rules():
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c.get("exp_alerts") for c in mine), f"{name}: no series make it fire"
        assert any(not c.get("exp_alerts") for c in mine), f"{name}: never checked quiet"


def test_every_alert_has_a_severity_and_a_runbook_section() -> None:
    runbook = RUNBOOK.read_text(encoding="utf-8")
    for name, rule in alert_rules().items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["runbook"] == f"deploy/prometheus/README.md#{name.lower()}"
        assert re.search(rf"^### {name}$", runbook, re.M), f"README has no section for {name}"


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def metric_names_in_rules() -> set[str]:
    rules = load_yaml(RULES)
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]] + dashboard_queries()
    return {name for e in exprs for name in re.findall(r"\b(payments_[a-z_]+)\b", e)}


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each panel's PromQL, as a recording rule promtool checks ($__rate_interval: Grafana's)."""
    queries = dashboard_queries()
    assert len(queries) >= 10
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": q.replace("$__rate_interval", "5m")}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps(rules), encoding="utf-8")  # JSON is YAML
    assert "SUCCESS" in promtool("check", "rules", str(path))


def test_the_dashboard_shows_rates_latency_outcomes_and_backlog() -> None:
    text = " ".join(dashboard_queries())
    for metric in (
        "payments_accepted_total",  # accept rate
        "payments_accept_seconds_bucket",  # accept latency
        "payments_outcomes_total",  # outcomes
        "payments_queue_depth",  # backlog depth
        "payments_queue_oldest_age_seconds",  # backlog age
        "payments_stripe_request_seconds_bucket",  # Stripe latency by call
        "payments_dead_letters",
        "payments_callbacks_reserved",  # callbacks held apart from the backlog
    ):
        assert metric in text, metric
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


# ---------------------------------------------------------------- what /metrics renders


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
async def client(server: fakeredis.FakeServer) -> AsyncIterator[httpx.AsyncClient]:
    from api.main import create_app

    redis = fakeredis.FakeAsyncRedis(server=server)
    app = create_app(Settings(environment="test", redis_url="redis://fake"), redis=redis)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


def rendered(text: str) -> dict[str, float]:
    """Unlabelled samples by name, plus every sample name (labelled ones as NaN-free keys)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, sample.value)
    return out


async def busy_fleet(server: fakeredis.FakeServer, *, age: float) -> None:
    """Redis as a running fleet leaves it: 3 messages queued (the oldest accepted `age` s ago),
    2 reserved by workers and 3 callbacks held by them (a slow receiver's), a heartbeat,
    outcomes, Stripe calls and a dead letter."""
    redis = fakeredis.FakeAsyncRedis(server=server)
    oldest = "pay_oldest"
    accepted = time.time() - age
    created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(accepted))
    await redis.hset(record_key(oldest), mapping={"id": oldest, "created_at": created})
    # kombu pushes on the left and pops on the right: the oldest is the rightmost.
    await redis.lpush("payments", charge_message(oldest, queue="payments"))
    for pid in ("pay_b", "pay_c"):
        await redis.lpush("payments", charge_message(pid, queue="payments"))
    for tag in ("tag1", "tag2"):
        await redis.hset(UNACKED, tag, orjson.dumps([{"body": "…"}, "", "payments"]))
    for tag in ("cb1", "cb2", "cb3"):
        await redis.hset(UNACKED, tag, orjson.dumps([{"body": "…"}, "", "callbacks"]))
    await redis.set(WORKER_HEARTBEAT, "1700000000.5")
    await redis.hincrby(OUTCOMES, "succeeded|", 5)
    await redis.hincrby(CLIENT_COUNTS, "shop|accepted", 5)
    await redis.hincrby(STRIPE_CALLS, "payment_intents.create|ok|0.2", 5)
    await redis.hincrbyfloat(STRIPE_CALLS, "payment_intents.create|ok|sum", 0.5)
    await redis.zadd(DEAD_LETTERS, {"pay_dead": 1})


async def test_every_metric_the_rules_name_is_exported(
    client: httpx.AsyncClient, server: fakeredis.FakeServer
) -> None:
    await busy_fleet(server, age=30)
    await client.get("/healthz")  # an answer for payments_http_requests_total to count
    response = await client.get("/metrics")
    assert response.status_code == 200
    names = set(rendered(response.text))
    missing = metric_names_in_rules() - names
    assert not missing, f"rules or dashboard name metrics /metrics does not render: {missing}"


async def test_queue_depth_counts_reserved_messages_and_the_oldest_age(
    client: httpx.AsyncClient, server: fakeredis.FakeServer
) -> None:
    await busy_fleet(server, age=700)
    got = rendered((await client.get("/metrics")).text)
    assert got["payments_queue_depth"] == 3 + 2, "reserved (unacked) messages are work not done"
    assert got["payments_queue_reserved"] == 2
    # Callbacks a receiver holds are no charges to do: apart, not in the scaling signal.
    assert got["payments_callbacks_reserved"] == 3
    assert 699 <= got["payments_queue_oldest_age_seconds"] <= 760
    assert got["payments_worker_heartbeat_timestamp_seconds"] == 1700000000.5
    assert got["payments_redis_up"] == 1
    assert got["payments_dead_letters"] == 1


async def test_oldest_age_prefers_the_enqueued_at_stamp(
    client: httpx.AsyncClient, server: fakeredis.FakeServer
) -> None:
    """A replayed dead letter accepted days ago is not a backlog days old: the stamp is when
    its message was queued."""
    redis = fakeredis.FakeAsyncRedis(server=server)
    await redis.hset(record_key("pay_old"), mapping={"created_at": "2020-01-01T00:00:00.000Z"})
    stamp = int((time.time() - 90) * 1000)
    message = charge_message("pay_old", queue="payments", headers={"enqueued_at": stamp})
    await redis.lpush("payments", message)
    got = rendered((await client.get("/metrics")).text)
    assert 89 <= got["payments_queue_oldest_age_seconds"] <= 150


async def test_an_empty_idle_queue_reads_zero(client: httpx.AsyncClient) -> None:
    got = rendered((await client.get("/metrics")).text)
    assert got["payments_queue_depth"] == 0
    assert got["payments_queue_oldest_age_seconds"] == 0
    # No worker ever reported: no heartbeat series, which PaymentsNoWorkerAlive treats as down.
    assert "payments_worker_heartbeat_timestamp_seconds" not in got


async def test_redis_down_answers_200_with_redis_up_0(
    client: httpx.AsyncClient, server: fakeredis.FakeServer
) -> None:
    await busy_fleet(server, age=30)
    server.connected = False
    response = await client.get("/metrics")
    assert response.status_code == 200, "a failed scrape would hide the Redis alert"
    got = rendered(response.text)
    assert got["payments_redis_up"] == 0
    assert "payments_accept_seconds_count" in got  # the API's own metrics still come
    # No made-up zeros for what lives in Redis (a 0 queue would look healthy).
    assert "payments_queue_depth" not in got
    assert "payments_dead_letters" not in got
