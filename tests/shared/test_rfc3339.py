"""The one reading of a client's RFC 3339 date-time: the calendar's edges and the leap second's
place, past what the API tests' table (tests/support.py) shows through the fields."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.payments.rfc3339 import ms_from_rfc3339


def _ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return round(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


DAY = 86_400_000


def test_any_instant_datetime_writes_is_read_to_its_millisecond() -> None:
    rng = random.Random(3339)
    for _ in range(2000):
        ms = rng.randrange(_ms(1, 1, 2), _ms(9999, 12, 30))
        offset = timezone(timedelta(minutes=rng.randrange(-23 * 60 - 59, 23 * 60 + 60)))
        when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
        text = when.astimezone(offset).isoformat()
        assert ms_from_rfc3339(text) == ms, text


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        # Year 0, which datetime lacks, is a leap year: its 29 February is 307 days before 1 AD.
        ("0000-02-29T00:00:00Z", _ms(1, 1, 1) - 307 * DAY),
        ("9999-12-31T23:59:59-23:59", _ms(9999, 12, 31, 23, 59, 59) + (23 * 60 + 59) * 60_000),
        ("2024-02-29T00:00:00Z", _ms(2024, 2, 29)),
        ("2000-02-29T00:00:00Z", _ms(2000, 2, 29)),
        # Leap seconds at 23:59:60 UTC on a month's last day, whatever the offset shows.
        ("2027-01-01T00:59:60+01:00", _ms(2027, 1, 1)),
        ("2026-06-30T19:29:60-04:30", _ms(2026, 7, 1)),
        ("2026-02-28T23:59:60.999999Z", _ms(2026, 3, 1) + 999),
    ],
)
def test_the_calendar_s_edges(text: str, ms: int) -> None:
    assert ms_from_rfc3339(text) == ms


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",  # not a leap year: divisible by 100, not by 400
        "2026-04-31T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-12-00T00:00:00Z",
        "2026-12-31T23:60:00Z",
        "2026-12-31T16:01:00+24:00",
        "2026-12-31T16:01:00+01:60",
        "2026-12-31T23:59:60+01:00",  # 22:59:60 UTC
        "2027-01-01T23:59:60Z",  # the first day of a month, not its last
        "2026-12-31T16:01:00.Z",
        "2026-12-31T16:01:00Z ",
        "2026-12-31T16:01:00Z\n",
        "+2026-12-31T16:01:00Z",
        "12026-12-31T16:01:00Z",
        "2026-12-31",
        "T16:01:00Z",
    ],
)
def test_what_is_not_a_date_time_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|no such|no leap second"):
        ms_from_rfc3339(text)
