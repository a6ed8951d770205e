"""The one backoff formula: doubling from the base, never past the cap, jitter within bounds."""

from __future__ import annotations

from itertools import islice

from shared.backoff import backoff, delays


def test_waits_double_from_the_base_and_stay_at_the_cap() -> None:
    assert list(islice(delays(base=0.5, cap=5.0), 7)) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_full_jitter_stays_between_nothing_and_the_capped_wait() -> None:
    waits = [backoff(3, base=1.0, cap=30.0, jitter="full") for _ in range(500)]
    assert all(0 <= w <= 8.0 for w in waits)
    assert max(waits) - min(waits) > 4.0  # spread, not one value
    assert all(0 <= backoff(40, base=1.0, cap=30.0, jitter="full") <= 30.0 for _ in range(100))


def test_equal_jitter_is_never_less_than_half_the_wait() -> None:
    waits = [backoff(2, base=10.0, cap=7200.0, jitter="equal") for _ in range(500)]
    assert all(20.0 <= w <= 40.0 for w in waits)


def test_a_huge_retry_count_is_the_cap_not_an_overflow() -> None:
    assert backoff(10_000, base=30.0, cap=4 * 3600.0) == 4 * 3600.0
