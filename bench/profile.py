"""Profiles of the accept path: py-spy samples the real API while wrk loads it.

``record`` runs ``py-spy record --format raw`` (collapsed stacks) against a running uvicorn;
``summarize`` turns the stacks into the top entries: by own time (the sampled frame itself) and
by inclusive time for the service's own code (api/, shared/) and the Redis client. No py-spy (or
no permission to attach): no profile, and the report says so.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PROFILES = Path(__file__).resolve().parent / "profiles"
# The baseline profile (commit d30f741, the same wrk load, 32 connections, 10 s at 200 Hz), as
# this module's table: the report shows it next to the new one.
BEFORE = PROFILES / "before-d30f741.md"

OWN_CODE = ("(api/", "(shared/", "(redis/", "(api\\", "(shared\\")


@dataclass(frozen=True)
class Profile:
    samples: int
    own: list[tuple[str, float]]  # frame, percent of samples where it was the running frame
    inclusive: list[tuple[str, float]]  # frame, percent of samples with it on the stack


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


def record(pid: int, seconds: float, out: Path, *, rate: int = 200) -> bool:
    binary = py_spy()
    if binary is None:
        return False
    proc = subprocess.run(  # noqa: S603 (py-spy on our own child process)
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    return proc.returncode == 0 and out.exists() and out.stat().st_size > 0


def _short(frame: str) -> str:
    """``name (path/to/site-packages/pkg/mod.py:12)`` -> ``name (pkg/mod.py:12)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name


def summarize(stacks: str, *, top: int = 12) -> Profile:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stacks.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        own[_short(frames[-1])] += n
        # Inclusive: per function (file + name, any line), counted once per sample.
        seen = {_short(f).rsplit(":", 1)[0] + ")" for f in frames if any(m in f for m in OWN_CODE)}
        for f in seen:
            inclusive[f] += n
    pct = 100.0 / total if total else 0.0
    return Profile(
        samples=total,
        own=[(f, c * pct) for f, c in own.most_common(top)],
        inclusive=[(f, c * pct) for f, c in inclusive.most_common(top)],
    )


def table(profile: Profile) -> list[str]:
    lines = [
        f"{profile.samples} samples.",
        "",
        "| own time | frame | | inclusive | function (service code and redis-py) |",
        "| --- | --- | --- | --- | --- |",
    ]
    rows = max(len(profile.own), len(profile.inclusive))
    for i in range(rows):
        own = profile.own[i] if i < len(profile.own) else ("", 0.0)
        inc = profile.inclusive[i] if i < len(profile.inclusive) else ("", 0.0)
        lines.append(
            f"| {own[1]:.1f}% | `{own[0]}` | | {inc[1]:.1f}% | `{inc[0]}` |"
            if own[0] and inc[0]
            else f"| {own[1]:.1f}% | `{own[0]}` | | | |"
            if own[0]
            else f"| | | | {inc[1]:.1f}% | `{inc[0]}` |"
        )
    return lines


def load_before() -> list[str]:
    return BEFORE.read_text().rstrip("\n").splitlines() if BEFORE.exists() else []


if __name__ == "__main__":  # python -m bench.profile STACKS.txt > bench/profiles/NAME.md
    print("\n".join(table(summarize(Path(sys.argv[1]).read_text()))))
