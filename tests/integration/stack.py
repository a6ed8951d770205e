"""A whole service stack of real processes that a fault test can break and mend.

Redis (always its own here, so it can be killed), the emulator, the fault proxy between the
service and the emulator, N workers and the API.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
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
    free_port,
    python_module,
    redis_server_argv,
    wait_for_port,
)

CLIENT_KEY = "fault-test-client-key"


def pay(
    api: httpx.Client,
    customer: str,
    amount: str = "42.99",
    *,
    wait: int = 0,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST /payments as a client would."""
    return api.post(
        "/payments",
        json={"account_id": customer, "amount": amount},
        params={"wait": wait},
        headers=headers or {},
    )


def final(api: httpx.Client, payment_id: str, timeout: float = 180) -> dict[str, Any]:
    """Poll a payment until its status is final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = api.get(f"/payments/{payment_id}").json()
        if body["status"] not in ("queued", "processing"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"{payment_id} not final after {timeout}s")


@dataclass
class Stack:
    group: ProcessGroup
    data_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    redis_port: int = field(default_factory=free_port)
    emulator_port: int = field(default_factory=free_port)
    proxy_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def emulator_url(self) -> str:
        return f"http://127.0.0.1:{self.emulator_port}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.redis_url,
            "STRIPE_API_BASE": self.proxy_url,
            "ENVIRONMENT": "test",
            "API_KEYS": CLIENT_KEY,
            "WORKER_CONCURRENCY": "8",
            **self.extra_env,
        }

    def start(self, workers: int = 2) -> Stack:
        self.start_redis()
        proc = self.group.start("stripe-emulator", emulator_argv(self.emulator_port))
        wait_for_port(self.emulator_port, proc=proc)
        proc = self.group.start(
            "fault-proxy",
            python_module("tests.fault_proxy", "--upstream", self.emulator_url,
                          "--port", str(self.proxy_port)),
        )  # fmt: skip
        wait_for_port(self.proxy_port, proc=proc)
        for n in range(1, workers + 1):
            self.start_worker(f"w{n}")
        proc = self.group.start("api", api_argv(self.api_port), env=self.env)
        wait_for_port(self.api_port, proc=proc)
        return self

    def start_redis(self) -> None:
        proc = self.group.start("redis", redis_server_argv(self.redis_port, self.data_dir))
        wait_for_port(self.redis_port, proc=proc)

    def kill_redis(self) -> None:
        self.group.stop("redis", sig=signal.SIGKILL, grace=5)

    def worker_log(self, name: str) -> Path:
        return self.group.log_dir / f"worker-{name}.log"

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        log = self.worker_log(name)
        offset = log.stat().st_size if log.exists() else 0
        proc = self.group.start(
            f"worker-{name}", celery_worker_argv("-n", f"{name}@%h"), env=self.env
        )
        deadline = time.monotonic() + 60
        while "ready." not in log.read_text(errors="replace")[offset:]:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise TimeoutError(f"worker {name} did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        return proc

    def signal_worker(self, name: str, sig: int, grace: float = 150) -> int | None:
        proc = self.group.procs[f"worker-{name}"]
        self.group.stop(f"worker-{name}", sig=sig, grace=grace)
        return proc.returncode

    def worker_holding(self, payment_id: str, names: list[str]) -> str:
        """Which worker started charging the payment (from the workers' own logs)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for name in names:
                for line in self.worker_log(name).read_text(errors="replace").splitlines():
                    if '"charge.started"' in line and payment_id in line:
                        return name
            time.sleep(0.05)
        raise AssertionError(f"no worker received {payment_id}")

    # --- clients -------------------------------------------------------------------------

    def api(self, timeout: float = 40) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        )

    @classmethod
    @contextlib.contextmanager
    def running(
        cls, tmp: pytest.TempPathFactory, name: str, env: dict[str, str], workers: int
    ) -> Iterator[Stack]:
        """A stack of its own for one test, stopped whatever happens."""
        group = ProcessGroup(tmp.mktemp(f"{name}-logs"))
        try:
            yield cls(group, tmp.mktemp(f"{name}-redis"), env).start(workers=workers)
        finally:
            group.stop_all()

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=5)

    def proxy(self, **config: Any) -> None:
        httpx.post(f"{self.proxy_url}/_proxy/config", json=config).raise_for_status()

    def proxy_reset(self, *, forget: bool = False) -> None:
        httpx.post(f"{self.proxy_url}/_proxy/reset", json={"forget": forget}).raise_for_status()

    def proxy_log(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = httpx.get(f"{self.proxy_url}/_proxy/log").json()
        return entries

    def wait_for_stripe_call(self, path: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.proxy_log():
                if entry["path"] == path:
                    return entry
            time.sleep(0.05)
        raise AssertionError(f"no Stripe call to {path}")
