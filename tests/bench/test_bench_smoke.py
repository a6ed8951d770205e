"""A short smoke run of the benchmark (`python -m bench --smoke`): every part runs end to end
(its own Redis, the Stripe stub, the bare and the real API under wrk, workers draining, the list
route) and the report is written. No timing is asserted: this machine is shared and noisy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.wrk import INSTALL_HINT
from devtools.processes import ROOT


@pytest.mark.integration
@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("wrk") is None, reason=INSTALL_HINT.replace("\n", " "))
def test_bench_smoke_writes_the_report(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--output-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for heading in ("POST /payments", "ratio POST /payments / bare", "Drain", "List", "Fairness"):
        assert heading in proc.stdout
    report = (tmp_path / "PERFORMANCE.md").read_text()
    assert "python -m bench --smoke" in report
    assert "CPUs" in report
    assert "| 50 ms |" in report  # one drain row, 1 and 2 workers
    if (tmp_path / "performance.png").exists():
        assert (tmp_path / "performance.png").stat().st_size > 1000


def test_wrk_missing_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import wrk

    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(wrk.WrkMissing, match="apt-get install -y wrk"):
        wrk.wrk_binary()
