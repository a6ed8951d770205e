"""Flower, as an operator reaches it: never without a login, its API included."""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest

from devtools.processes import flower_argv, free_port, wait_for_port
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

LOGIN = ("ops", "flower-test-password")


def test_flower_refuses_to_start_without_credentials(stack_env: dict[str, str]) -> None:
    env = {k: v for k, v in {**os.environ, **stack_env}.items() if k != "FLOWER_BASIC_AUTH"}
    done = subprocess.run(
        flower_argv(free_port()), env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "FLOWER_BASIC_AUTH" in done.stderr + done.stdout


def test_flower_refuses_to_start_with_its_api_opened(stack_env: dict[str, str]) -> None:
    """FLOWER_UNAUTHENTICATED_API opens Flower's API to anyone: refused even with the login."""
    port = free_port()
    env = {**os.environ, **stack_env, "FLOWER_BASIC_AUTH": ":".join(LOGIN),
           "FLOWER_UNAUTHENTICATED_API": "true"}  # fmt: skip
    proc = subprocess.Popen(
        flower_argv(port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for_port(port, proc=proc, timeout=60)
    except RuntimeError:  # it exited without listening
        pass
    else:
        pytest.fail("Flower started with FLOWER_UNAUTHENTICATED_API set")
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=30)

    assert proc.returncode != 0
    assert b"FLOWER_UNAUTHENTICATED_API" in stderr


def test_flower_and_its_api_need_the_login(session_stack: Stack, worker: str) -> None:
    with session_stack.flower(LOGIN) as base:
        for path in ("/", "/tasks", "/api/workers", "/api/tasks"):
            assert httpx.get(base + path).status_code == 401, path
            assert httpx.get(base + path, auth=("ops", "wrong")).status_code == 401, path
        assert httpx.get(base + "/api/workers", auth=LOGIN, timeout=30).status_code == 200
