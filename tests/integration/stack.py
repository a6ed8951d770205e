"""The one way to build a service stack of real processes: Redis, the Stripe emulator, the fault
proxy (optional), workers and the API.

Two kinds are built with it:
- the session's (``tests/integration/conftest.py``): Redis at ``REDIS_URL`` when that answers,
  else one of its own; no fault proxy; each piece started when a test first asks for it.
- a fault test's own (``Stack.running`` or ``Stack(...).start()``): always its own Redis, so it
  can be killed, and the fault proxy between the service and the emulator.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from devtools.processes import (
    ProcessGroup,
    api_argv,
    celery_worker_argv,
    emulator_argv,
    flower_argv,
    free_port,
    log_size,
    python_module,
    redis_server_argv,
    wait_for_log,
    wait_for_port,
)
from devtools.stripe_emulator import register_webhook_endpoint
from shared.store import charge_queues
from shared.store.keys import UNACKED
from tests.support import (
    CLIENT_KEY,
    QUEUE,
    SERVICE_STRIPE_KEY,
    StripeAdmin,
    final,
    json_lines,
    pay,
    stripe_admin_http,
    wait_until,
)

__all__ = ["Stack", "final", "pay"]


@dataclass
class Stack:
    group: ProcessGroup
    data_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    redis_port: int = field(default_factory=free_port)
    emulator_port: int = field(default_factory=free_port)
    proxy_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    fault_proxy: bool = True
    external_redis: str | None = None  # a Redis that answers already: used, never started

    @property
    def redis_url(self) -> str:
        return self.external_redis or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def emulator_url(self) -> str:
        return f"http://127.0.0.1:{self.emulator_port}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def stripe_base(self) -> str:
        """Where the service sends its Stripe calls."""
        return self.proxy_url if self.fault_proxy else self.emulator_url

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.redis_url,
            "STRIPE_API_BASE": self.stripe_base,
            "ENVIRONMENT": "test",
            "API_KEYS": CLIENT_KEY,
            # Never open, whatever the test process's own environment says (tests/conftest.py).
            "API_ALLOW_ANONYMOUS": "false",
            "STRIPE_API_KEY": SERVICE_STRIPE_KEY,
            "WORKER_CONCURRENCY": "8",
            "LOG_LEVEL": "DEBUG",
            **self.extra_env,
        }

    # --- building ------------------------------------------------------------------------

    def start(self, workers: int = 2) -> Stack:
        self.start_redis()
        self.start_emulator()
        for n in range(1, workers + 1):
            self.start_worker(f"w{n}")
        self.start_api()
        return self

    def start_redis(self) -> None:
        if self.external_redis:
            return
        proc = self.group.start("redis", redis_server_argv(self.redis_port, self.data_dir))
        wait_for_port(self.redis_port, proc=proc)

    def kill_redis(self) -> None:
        if self.external_redis:
            raise RuntimeError("this stack uses a Redis it did not start: not killing it")
        self.group.stop("redis", sig=signal.SIGKILL, grace=5)

    def start_emulator(self) -> None:
        """The emulator and, on a fault stack, the fault proxy in front of it."""
        proc = self.group.start("stripe-emulator", emulator_argv(self.emulator_port))
        wait_for_port(self.emulator_port, proc=proc)
        if self.fault_proxy:
            proc = self.group.start(
                "fault-proxy",
                python_module("tests.fault_proxy", "--upstream", self.emulator_url,
                              "--port", str(self.proxy_port)),
            )  # fmt: skip
            wait_for_port(self.proxy_port, proc=proc)

    def start_api(self) -> None:
        proc = self.group.start("api", api_argv(self.api_port), env=self.env)
        wait_for_port(self.api_port, proc=proc)

    def worker_log(self, name: str) -> Path:
        return self.group.log_dir / f"worker-{name}.log"

    def start_worker(self, name: str, queues: str | None = None) -> subprocess.Popen[bytes]:
        """A worker (``queues``: Celery's ``-Q``, e.g. ``callbacks``; default both queues)."""
        log = self.worker_log(name)
        since = log_size(log)  # a restarted worker appends to its old log
        argv = celery_worker_argv("-n", f"{name}@%h", *(("-Q", queues) if queues else ()))
        proc = self.group.start(f"worker-{name}", argv, env=self.env)
        wait_for_log(log, "ready.", since=since, proc=proc)
        return proc

    def signal_worker(self, name: str, sig: int, grace: float = 150) -> int | None:
        proc = self.group.procs[f"worker-{name}"]
        self.group.stop(f"worker-{name}", sig=sig, grace=grace)
        return proc.returncode

    @contextlib.contextmanager
    def flower(self, login: tuple[str, str], name: str = "flower") -> Iterator[str]:
        """Flower with basic auth ``login`` while the block runs; yields its URL."""
        port = free_port()
        env = {**self.env, "FLOWER_BASIC_AUTH": ":".join(login)}
        proc = self.group.start(name, flower_argv(port), env=env)
        try:
            wait_for_port(port, proc=proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            self.group.stop(name)

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        tmp: pytest.TempPathFactory,
        name: str,
        env: dict[str, str],
        workers: int,
        *,
        fault_proxy: bool = True,
    ) -> Iterator[Stack]:
        """A stack of its own for one test, stopped whatever happens."""
        group = ProcessGroup(tmp.mktemp(f"{name}-logs"))
        try:
            stack = cls(group, tmp.mktemp(f"{name}-redis"), env, fault_proxy=fault_proxy)
            yield stack.start(workers=workers)
        finally:
            group.stop_all()

    # --- watching ------------------------------------------------------------------------

    def worker_events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines a worker wrote, oldest first."""
        log = self.worker_log(name)
        return json_lines(log.read_text(errors="replace")) if log.exists() else []

    def worker_holding(self, payment_id: str, names: list[str]) -> str:
        """Which worker started charging the payment (from the workers' own logs)."""

        def holder() -> str | None:
            for name in names:
                for line in self.worker_log(name).read_text(errors="replace").splitlines():
                    if '"charge.started"' in line and payment_id in line:
                        return name
            return None

        return wait_until(holder, timeout=30, what=f"a worker received {payment_id}")

    def wait_until_idle(self, timeout: float = 60) -> None:
        """Until every message given to the queues was taken and acknowledged: every charge
        queue (QUEUE_NAME and each client's) and the transport's unacknowledged set are empty
        (twice in a row, so a message caught between its pop and its entry in the unacked set
        is not missed)."""
        client = self.redis()
        queue = self.env.get("QUEUE_NAME", QUEUE)
        seen_idle = False

        def idle_twice() -> bool:
            nonlocal seen_idle
            idle = charge_queues.read(client, queue).ready == 0 and client.hlen(UNACKED) == 0
            seen_idle, was = idle, seen_idle
            return idle and was

        try:
            wait_until(idle_twice, timeout=timeout, what="queue and unacked set empty")
        finally:
            client.close()

    def wait_for_stripe_call(self, path: str, timeout: float = 30) -> dict[str, Any]:
        def call() -> dict[str, Any] | None:
            return next((e for e in self.proxy_log() if e["path"] == path), None)

        return wait_until(call, timeout=timeout, what=f"a Stripe call to {path}")

    # --- clients -------------------------------------------------------------------------

    def api(self, timeout: float = 40) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        )

    @contextlib.contextmanager
    def stripe_admin(self) -> Iterator[StripeAdmin]:
        """The emulator itself (never through the proxy), emptied first: it slows down as its
        store grows, and each test starts from an empty one."""
        with stripe_admin_http(self.emulator_url) as http:
            http.delete("/_config/data").raise_for_status()
            yield StripeAdmin(http)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=5)

    def proxy(self, **config: Any) -> None:
        httpx.post(f"{self.proxy_url}/_proxy/config", json=config).raise_for_status()

    def proxy_reset(self, *, forget: bool = False) -> None:
        httpx.post(f"{self.proxy_url}/_proxy/reset", json={"forget": forget}).raise_for_status()

    def proxy_log(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = httpx.get(f"{self.proxy_url}/_proxy/log").json()
        return entries


def module_stack(
    name: str, env: dict[str, str], *, webhook_secret: str | None = None
) -> tuple[object, object, object]:
    """A test module's own stack (one worker, no fault proxy) as its three fixtures, assigned
    ``stack, api, stripe = module_stack(...)``: ``stack`` for the module, ``api`` (the client
    key) and ``stripe`` (the emulator, emptied) for each test. With ``webhook_secret``, the
    emulator sends its events, signed with it, to the stack's webhook route."""

    @pytest.fixture(scope="module", name="stack")
    def stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
        with Stack.running(tmp_path_factory, name, env, workers=1, fault_proxy=False) as stack:
            if webhook_secret is not None:
                register_webhook_endpoint(
                    stack.emulator_url, f"{stack.api_url}/webhooks/stripe", webhook_secret
                )
            yield stack

    @pytest.fixture(name="api")
    def api_fixture(stack: Stack) -> Iterator[httpx.Client]:
        with stack.api() as client:
            yield client

    @pytest.fixture(name="stripe")
    def stripe_fixture(stack: Stack) -> Iterator[StripeAdmin]:
        with stack.stripe_admin() as admin:
            yield admin

    return stack_fixture, api_fixture, stripe_fixture
