"""What an operator sees of a payment: one request id from the API into its task, JSON logs,
and the workers' numbers on the API's /metrics."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.processes import ProcessGroup
from tests.integration.stack import Stack
from tests.support import StripeAdmin, json_lines, wait_until

pytestmark = pytest.mark.integration


def test_a_request_id_follows_the_payment_into_its_task(
    api: httpx.Client, stripe: StripeAdmin, session_stack: Stack, worker: str
) -> None:
    customer = stripe.customer()
    request_id = f"req-{customer}"

    response = api.post(
        "/payments",
        params={"wait": 30},
        json={"account_id": customer, "amount": "12.34"},
        headers={"X-Request-ID": request_id, "Idempotency-Key": f"obs-{customer}"},
    )

    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    payment_id = response.json()["id"]
    api_log = (session_stack.group.log_dir / "api.log").read_text(errors="replace")
    api_events = [e for e in json_lines(api_log) if e.get("request_id") == request_id]
    assert any(
        e["event"] == "payment.accepted"
        and e["payment_id"] == payment_id
        and e["idempotency_key"] == f"obs-{customer}"
        for e in api_events
    )

    # The answer comes from the record; the worker logs charge.succeeded just after writing it.
    def events_up_to_success() -> list[dict[str, Any]] | None:
        events = [
            e for e in session_stack.worker_events(worker) if e.get("request_id") == request_id
        ]
        return events if any(e["event"] == "charge.succeeded" for e in events) else None

    worker_events = wait_until(events_up_to_success, timeout=10, what="charge.succeeded logged")
    assert {e["payment_id"] for e in worker_events} == {payment_id}
    assert any(e["event"] == "charge.succeeded" for e in worker_events)


def test_every_log_line_of_the_api_and_the_worker_is_json(
    api: httpx.Client, stripe: StripeAdmin, processes: ProcessGroup, worker: str
) -> None:
    customer = stripe.customer()
    answer = api.post(
        "/payments", params={"wait": 30}, json={"account_id": customer, "amount": "1.00"}
    )
    assert answer.status_code == 200
    payment_id = answer.json()["id"]
    # The worker logs charge.succeeded just after writing the outcome the answer came from.
    wanted = {"api": "payment.accepted", f"worker-{worker}": "charge.succeeded"}
    for name, event in wanted.items():

        def logged(name: str = name, event: str = event) -> list[str] | None:
            text = (processes.log_dir / f"{name}.log").read_text(errors="replace")
            lines = [line for line in text.splitlines() if line.strip()]
            found = any(
                e.get("event") == event and e.get("payment_id") == payment_id
                for e in json_lines(text)
            )
            return lines if found else None

        lines = wait_until(logged, timeout=10, what=f"{event} of {payment_id} in {name}.log")
        # Celery prints its start-up banner before logging is configured; nothing after it.
        after_banner = [
            line for line in lines[celery_banner_end(lines) + 1 :] if not line.startswith("{")
        ]
        assert after_banner == [], f"{name}: {after_banner[:3]}"


def celery_banner_end(lines: list[str]) -> int:
    """The index of the banner's last line (-1 without a banner): the banner ends with the
    queue line after ``[queues]``, then ``[tasks]`` and one ``  . name`` line per task."""
    end = max((i + 1 for i, line in enumerate(lines) if "[queues]" in line), default=-1)
    tasks = next((i for i, line in enumerate(lines) if line.startswith("[tasks]")), None)
    if tasks is not None:
        end = tasks
        while end + 1 < len(lines) and lines[end + 1].startswith("  . "):
            end += 1
    return end


def test_metrics_include_what_the_workers_did(api: httpx.Client, stripe: StripeAdmin) -> None:
    customer = stripe.customer()
    assert (
        api.post(
            "/payments", params={"wait": 30}, json={"account_id": customer, "amount": "2.00"}
        ).status_code
        == 200
    )

    created = (("call", "payment_intents.create"), ("outcome", "ok"))

    def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        got = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(api.get("/metrics").text)
            for s in family.samples
        }
        return got if ("payments_stripe_request_seconds_count", created) in got else None

    # A worker writes its Stripe call timings every STRIPE_METRICS_FLUSH_SECONDS (1 s).
    got = wait_until(scraped, timeout=15, what="Stripe call timings in /metrics")
    assert got[("payments_outcomes_total", (("code", ""), ("status", "succeeded")))] >= 1
    assert got[("payments_stripe_request_seconds_count", created)] >= 1
    assert ("payments_queue_depth", ()) in got
    assert got[("payments_accept_seconds_count", ())] >= 1
