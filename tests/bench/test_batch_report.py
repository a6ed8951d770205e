"""`python -m bench --only batch` rewrites the batch section of PERFORMANCE.md and keeps the
rest of the file as it was."""

from __future__ import annotations

from bench import report
from bench.__main__ import Results
from bench.batch import BatchResult, Round


def result() -> Results:
    one = BatchResult(size=100, seconds=5, single_connections=32, batch_connections=8)
    one.singles = [Round(1000, 1000, 20, 40, 0, 300), Round(1100, 1100, 20, 40, 0, 290)]
    one.batches = [Round(11000, 110, 70, 150, 0, 30), Round(9900, 99, 70, 150, 0, 31)]
    one.round_trips_per_batch, one.round_trips_per_single = 1, 1
    results = Results()
    results.batch = one
    return results


def test_the_section_says_the_ratio_and_the_round_trips() -> None:
    section = report.batch_section(result())
    assert "**10.0x** (per round: 11.0, 9.0); goal >= 10x: met" in section
    assert "Redis round trips per batch of 100: **1**" in section


def test_the_section_is_replaced_alone_or_put_before_the_plot() -> None:
    section = report.batch_section(result())
    document = "# Performance\n\n### Accept\n\n![accept and group commit](performance.png)\n\nkept"
    first = report.with_section(document, section)
    assert first.index("### Batches") < first.index("![accept") < first.index("kept")
    stale = first.replace("**10.0x**", "**2.0x**")
    assert report.with_section(stale, section) == first
    assert report.with_section("", section).strip() == section.strip()
