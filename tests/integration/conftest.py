"""Real processes over real sockets: Redis, the Stripe emulator, Celery workers and uvicorn.

One session stack (``tests/integration/stack.py``, no fault proxy), each piece started the
first time a test asks for it: Redis is the one at ``REDIS_URL`` when that answers, else one the
stack starts. Every process is stopped at the end of the session, none is left behind. Helpers
(keys, ``pay``, ``final``, ``StripeAdmin``) are in ``tests/support.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from devtools.processes import ProcessGroup, redis_reachable
from tests.integration.stack import Stack
from tests.support import StripeAdmin

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def session_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    configured = os.environ.get("REDIS_URL")
    group = ProcessGroup(tmp_path_factory.mktemp("logs"))
    try:
        yield Stack(
            group,
            tmp_path_factory.mktemp("redis"),
            fault_proxy=False,
            external_redis=configured if redis_reachable(configured) else None,
        )
    finally:
        group.stop_all()


@pytest.fixture(scope="session")
def processes(session_stack: Stack) -> ProcessGroup:
    return session_stack.group


@pytest.fixture(scope="session")
def redis_url(session_stack: Stack) -> str:
    session_stack.start_redis()
    return session_stack.redis_url


@pytest.fixture(scope="session")
def stripe_base(session_stack: Stack) -> str:
    session_stack.start_emulator()
    return session_stack.stripe_base


@pytest.fixture(scope="session")
def stack_env(session_stack: Stack, redis_url: str, stripe_base: str) -> dict[str, str]:
    return session_stack.env


@pytest.fixture(scope="session")
def worker(session_stack: Stack, stack_env: dict[str, str]) -> str:
    """The session's one worker; its name (``w1``) is the value."""
    session_stack.start_worker("w1")
    return "w1"


@pytest.fixture(scope="session")
def api_url(session_stack: Stack, worker: str) -> str:
    session_stack.start_api()
    return session_stack.api_url


@pytest.fixture
def api(session_stack: Stack, api_url: str) -> Iterator[httpx.Client]:
    with session_stack.api() as client:
        yield client


@pytest.fixture
def stripe(session_stack: Stack, stripe_base: str) -> Iterator[StripeAdmin]:
    with session_stack.stripe_admin() as admin:
        yield admin
