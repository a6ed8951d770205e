"""Real processes over real sockets: Redis, the Stripe emulator, Celery workers and uvicorn.

Redis is the one at ``REDIS_URL`` when that answers, else a redis-server these fixtures start
(and stop). Every process is stopped at the end of the session, none is left behind.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from devtools.demo import create_test_customer
from devtools.processes import (
    ProcessGroup,
    api_argv,
    celery_worker_argv,
    emulator_argv,
    free_port,
    redis_reachable,
    temporary_redis,
    wait_for_log,
    wait_for_port,
)

pytestmark = pytest.mark.integration

STRIPE_KEY = "sk_test_emulator"
# A key that looks like a real one, made per run: the logs must never show it.
SERVICE_STRIPE_KEY = "sk_test_" + secrets.token_hex(16)
CLIENT_KEY = "integration-client-key"
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessGroup]:
    group = ProcessGroup(tmp_path_factory.mktemp("logs"))
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture(scope="session")
def redis_url(processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("REDIS_URL")
    if configured and redis_reachable(configured):
        yield configured
        return
    with temporary_redis(tmp_path_factory.mktemp("redis"), processes) as url:
        yield url


@pytest.fixture(scope="session")
def stripe_base(processes: ProcessGroup) -> str:
    port = free_port()
    proc = processes.start("stripe-emulator", emulator_argv(port))
    wait_for_port(port, proc=proc)
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def stack_env(redis_url: str, stripe_base: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "STRIPE_API_BASE": stripe_base,
        "ENVIRONMENT": "test",
        "WORKER_CONCURRENCY": "8",
        "API_KEYS": CLIENT_KEY,
        "STRIPE_API_KEY": SERVICE_STRIPE_KEY,
        "LOG_LEVEL": "DEBUG",
    }


@pytest.fixture(scope="session")
def worker(processes: ProcessGroup, stack_env: dict[str, str]) -> None:
    processes.start("worker-1", celery_worker_argv("-n", "w1@%h"), env=stack_env)
    wait_for_log(processes.log_dir / "worker-1.log", "ready.")


@pytest.fixture(scope="session")
def api_url(processes: ProcessGroup, stack_env: dict[str, str], worker: None) -> str:
    port = free_port()
    proc = processes.start("api", api_argv(port), env=stack_env)
    wait_for_port(port, proc=proc)
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def api(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=40, headers=AUTH) as client:
        yield client


@dataclass
class StripeAdmin:
    """Direct HTTP to the emulator, to set up customers and to see what was really charged."""

    http: httpx.Client

    def customer(self, card: str | None = "pm_card_visa") -> str:
        if card is not None:
            return create_test_customer(self.http, card)
        customer = self.http.post("/v1/customers", data={"email": "t@example.com"}).json()
        return str(customer["id"])

    def charges(self, customer: str) -> list[dict[str, Any]]:
        page = self.http.get("/v1/charges", params={"customer": customer, "limit": 100})
        page.raise_for_status()
        data: list[dict[str, Any]] = page.json()["data"]
        return data


@pytest.fixture
def stripe(stripe_base: str) -> Iterator[StripeAdmin]:
    headers = {"Authorization": f"Bearer {STRIPE_KEY}"}
    with httpx.Client(base_url=stripe_base, headers=headers, timeout=30) as http:
        # The emulator slows down as its store grows: each test starts from an empty one.
        http.delete("/_config/data").raise_for_status()
        yield StripeAdmin(http)
