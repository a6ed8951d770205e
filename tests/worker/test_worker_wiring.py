"""How a worker is put together: it knows every task as it starts, its maintenance rounds are
logged by name and one failing round does not stop the others, and a task waits for Redis
instead of failing while Redis does not answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from structlog.testing import capture_logs

from shared.callbacks.events import CALLBACK_TASK
from shared.payments.payment_records import CAPTURE_TASK, CHARGE_TASK, STRIPE_EVENT_TASK
from shared.payments.refund_records import REFUND_TASK
from worker.maintenance import ROUNDS, MaintenanceThread, Round
from worker.redis_wait import REDIS_WAIT_MAX_SECONDS, until_redis_answers

ROOT = Path(__file__).resolve().parents[2]

# What `celery -A worker.celery_app worker` does before it consumes: import the app, then the
# modules it names (its `include`). Nothing else of the project is imported first.
WORKER_START = """
from celery.signals import worker_ready
from worker.celery_app import app
app.loader.import_default_modules()
print(" ".join(sorted(name for name in app.tasks if not name.startswith("celery."))))
print(" ".join(receiver().__module__ for _, receiver in worker_ready.receivers))
"""


def test_a_starting_worker_registers_every_task_and_its_maintenance() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WORKER_START],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=True,
    )
    tasks, ready = done.stdout.splitlines()
    assert tasks.split() == sorted(
        [CHARGE_TASK, REFUND_TASK, CAPTURE_TASK, CALLBACK_TASK, STRIPE_EVENT_TASK]
    )
    assert "worker.maintenance" in ready.split()


def test_each_round_has_its_own_name_and_the_heartbeat_comes_first() -> None:
    names = [job.name for job in ROUNDS]
    assert len(set(names)) == len(names)
    # The queue-depth line is the workers' heartbeat: no round waiting on Stripe delays it.
    assert names[0] == "queue_depth"
    assert "<lambda>" not in names


def test_a_failing_round_is_logged_by_its_name_and_the_others_still_run() -> None:
    ran: list[str] = []

    def redis_down() -> None:
        raise RedisConnectionError("connection refused")

    def crashes() -> None:
        raise ZeroDivisionError

    thread = MaintenanceThread(
        store=None,  # type: ignore[arg-type]  # run_once never takes the turn
        interval=60,
        rounds=[
            Round("payments_sweep", redis_down),
            Round("refunds", crashes),
            Round("callbacks", lambda: ran.append("callbacks")),
        ],
    )
    with capture_logs() as logs:
        thread.run_once()

    assert ran == ["callbacks"]
    failed = [(line["event"], line["job"]) for line in logs if "job" in line]
    assert failed == [("maintenance.failed", "payments_sweep"), ("maintenance.crashed", "refunds")]
    assert logs[0]["error"] == "ConnectionError"


def test_a_task_waits_for_redis_then_carries_on() -> None:
    errors: list[Exception] = [RedisConnectionError("refused"), RedisTimeoutError("slow")]
    errors += [RedisConnectionError("refused")] * 5
    slept: list[float] = []

    def work() -> str:
        if errors:
            raise errors.pop(0)
        return "charged"

    with capture_logs() as logs:
        result = until_redis_answers(
            work, event="charge.redis_unavailable", sleep=slept.append, payment_id="pay_1"
        )

    assert result == "charged"
    assert slept == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert max(slept) == REDIS_WAIT_MAX_SECONDS
    assert {line["event"] for line in logs} == {"charge.redis_unavailable"}
    assert all(line["payment_id"] == "pay_1" for line in logs)
    assert [line["error"] for line in logs[:2]] == ["ConnectionError", "TimeoutError"]


def test_an_error_other_than_redis_not_answering_is_not_waited_out() -> None:
    def work() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        until_redis_answers(work, event="charge.redis_unavailable", sleep=lambda _: None)
