"""Dockerfiles: hadolint-clean, the exact entry points, non-root, cache-friendly layer order."""

from __future__ import annotations

import ast
import fnmatch
import json
import re
from pathlib import Path

import pytest

from ._tools import REPO, run_tool

ENTRY_POINTS = {
    "Dockerfile.api": ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8080"],
    "Dockerfile.worker": ["celery", "-A", "worker.celery_app", "worker", "--loglevel=INFO"],
    "Dockerfile.emulator": [
        "python", "-m", "devtools.stripe_emulator", "--host", "0.0.0.0", "--port", "8420",
    ],
}  # fmt: skip
HEALTHCHECKS = {
    "Dockerfile.api": "http://127.0.0.1:8080/readyz",
    "Dockerfile.worker": 'inspect ping -d \\"celery@$HOSTNAME\\"',
    "Dockerfile.emulator": "8420",
}
DOCKERFILES = sorted(ENTRY_POINTS)
# Each service's image holds its own package and what it stands on, never the other service's.
SERVICE_PACKAGES = {"Dockerfile.api": {"api", "shared"}, "Dockerfile.worker": {"worker", "shared"}}
FIRST_PARTY = {"api", "shared", "worker", "devtools", "bench", "tests", "flowerconfig"}


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in (REPO / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{name} ends inside a continuation"
    out = []
    for line in logical:
        op, _, args = line.partition(" ")
        out.append((op.upper(), args.strip()))
    return out


def only(name: str, op: str) -> str:
    found = [args for o, args in instructions(name) if o == op]
    assert len(found) == 1, f"{name}: expected one {op}, found {found}"
    return found[0]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_clean(name: str) -> None:
    result = run_tool("hadolint", "--failure-threshold", "warning", "--no-color", name)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_cmd_is_the_exact_exec_form_entry_point(name: str) -> None:
    cmd = only(name, "CMD")
    assert cmd.startswith("["), f"{name}: shell-form CMD would not get SIGTERM as PID 1"
    assert json.loads(cmd) == ENTRY_POINTS[name]
    assert not [a for o, a in instructions(name) if o == "ENTRYPOINT"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runs_as_non_root(name: str) -> None:
    ops = instructions(name)
    users = [(i, a) for i, (o, a) in enumerate(ops) if o == "USER"]
    assert users, f"{name} has no USER: the app would run as root"
    index, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert index < next(i for i, (o, _) in enumerate(ops) if o == "CMD")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_pinned_slim_python_base_and_env(name: str) -> None:
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", only(name, "FROM"))
    env = " ".join(a for o, a in instructions(name) if o == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env


@pytest.mark.parametrize("name", DOCKERFILES)
def test_locked_deps_layer_comes_before_the_app(name: str) -> None:
    """Editing app code must not reinstall dependencies; installs only what the lock pins."""
    ops = instructions(name)
    lock_copy = next(i for i, (o, a) in enumerate(ops) if o == "COPY" and "requirements" in a)
    install = next(i for i, (o, a) in enumerate(ops) if o == "RUN" and "pip install" in a)
    install_args = ops[install][1]
    assert "--require-hashes" in install_args
    assert "-r requirements.lock" in install_args
    app_copies = [i for i, (o, a) in enumerate(ops) if o == "COPY" and "requirements" not in a]
    assert app_copies, f"{name} copies no application code"
    assert lock_copy < install < min(app_copies)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_healthcheck(name: str) -> None:
    check = only(name, "HEALTHCHECK")
    assert HEALTHCHECKS[name] in check
    assert "curl" not in check, "python:3.11-slim has no curl"
    assert "wget" not in check, "python:3.11-slim has no wget"


def copied_sources(name: str) -> list[str]:
    return [
        src
        for op, args in instructions(name)
        if op == "COPY" and "--from" not in args
        for src in [a for a in args.split() if not a.startswith("--")][:-1]
    ]


def first_party_imports(path: Path) -> set[str]:
    """Top-level first-party modules a file imports, anywhere in it (function bodies too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & FIRST_PARTY


@pytest.mark.parametrize("name", sorted(SERVICE_PACKAGES))
def test_each_service_image_ships_its_own_package_and_shared_only(name: str) -> None:
    packages = {src.rstrip("/") for src in copied_sources(name) if src.endswith("/")}
    assert packages == SERVICE_PACKAGES[name]


@pytest.mark.parametrize("name", sorted(SERVICE_PACKAGES))
def test_what_a_service_image_ships_imports_nothing_left_out(name: str) -> None:
    """The image runs: no module in it imports a first-party package it does not ship."""
    shipped = [src.rstrip("/") for src in copied_sources(name) if src != "requirements.lock"]
    importable = {Path(src).stem for src in shipped}
    files = [
        path
        for src in shipped
        for path in ((REPO / src).rglob("*.py") if (REPO / src).is_dir() else [REPO / src])
    ]
    assert files
    for path in files:
        missing = first_party_imports(path) - importable
        assert not missing, f"{name}: {path.relative_to(REPO)} imports {missing}, not shipped"


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _in_context(path: str) -> bool:
    """Docker's rule: the last matching pattern wins (a pattern also covers what lies below it)."""
    included = True
    for pattern in _dockerignore():
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pat) for p in prefixes) or (
            pat.startswith("**/") and any(fnmatch.fnmatch(part, pat[3:]) for part in parts)
        ):
            included = negate
    return included


@pytest.mark.parametrize("name", DOCKERFILES)
def test_everything_copied_is_in_the_build_context(name: str) -> None:
    for op, args in instructions(name):
        if op != "COPY" or "--from" in args:
            continue
        for src in [a for a in args.split() if not a.startswith("--")][:-1]:
            probe = src.rstrip("/") + ("/__init__.py" if src.endswith("/") else "")
            assert _in_context(probe), f"{name}: {src} is excluded by .dockerignore"


def test_dockerignore_keeps_secrets_and_junk_out() -> None:
    for path in (".env", ".git/config", ".venv/bin/python", "tests/ops/test_compose.py",
                 "api/__pycache__/main.cpython-311.pyc"):  # fmt: skip
        assert not _in_context(path), f"{path} would be sent to the Docker daemon"
