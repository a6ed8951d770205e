"""Flower, as an operator reaches it: never without a login, its API included."""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest

from devtools.processes import flower_argv, free_port
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


def test_flower_and_its_api_need_the_login(session_stack: Stack, worker: str) -> None:
    with session_stack.flower(LOGIN) as base:
        for path in ("/", "/tasks", "/api/workers", "/api/tasks"):
            assert httpx.get(base + path).status_code == 401, path
            assert httpx.get(base + path, auth=("ops", "wrong")).status_code == 401, path
        assert httpx.get(base + "/api/workers", auth=LOGIN, timeout=30).status_code == 200
