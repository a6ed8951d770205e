"""RFC 3339 date-times as clients send them (``expires_at``, ``created[gte]``/``created[lt]``).

One strict reading, so that every field that takes a time takes the same forms. The grammar is
RFC 3339's ``date-time`` (section 5.6) and nothing more:

- ``YYYY-MM-DD``, ``T`` or ``t``, ``hh:mm:ss``, an optional fraction (``.`` and one or more
  digits), then ``Z``, ``z`` or ``+hh:mm``/``-hh:mm`` (``-00:00`` is UTC, as section 4.3 has it).
  The space RFC 3339 lets applications put in place of ``T`` is not taken: a JSON field or a
  query string has no need of it (in a query string it would arrive as ``+`` or ``%20``).
- ASCII digits only, and no ISO 8601 form besides this one: the basic format
  (``20261202T160100Z``), week and ordinal dates, offsets with seconds or without their colon,
  a comma before the fraction, a missing offset and a date alone are all refused.
- Fields in their ranges: month 01-12, a day that month has (29 February in leap years only),
  hour 00-23, minute 00-59, second 00-59, offset hour 00-23 and minute 00-59.
- Second 60 only where a leap second can be (section 5.7): 23:59:60 in UTC on a month's last
  day, at any offset. It is read as the first instant of the next second (the next day's
  00:00:00 UTC, a fraction kept), which is what Unix time makes of it: ``23:59:60Z`` orders
  after every instant of ``23:59:59.xxx``, and a bound at it excludes none of them.
"""

from __future__ import annotations

import calendar
import re

_DATE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DAY_MS = 86_400_000


def ms_from_rfc3339(text: str) -> int:
    """``text``, an RFC 3339 date-time, in ms since the epoch (digits past the millisecond
    dropped, so the instant is never later than the one written); ValueError for anything
    else. Years 0000-9999, as the RFC's four digits give them."""
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    fraction, sign, offset_hour, offset_minute = match.group(7, 8, 9, 10)
    if not 1 <= month <= 12 or not 1 <= day <= _days_in_month(year, month):
        raise ValueError(f"no such date: {text!r}")
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError(f"no such time: {text!r}")
    offset_ms = 0
    if sign is not None:
        if int(offset_hour) > 23 or int(offset_minute) > 59:
            raise ValueError(f"no such offset: {text!r}")
        offset_ms = (int(offset_hour) * 60 + int(offset_minute)) * 60_000
        offset_ms = -offset_ms if sign == "-" else offset_ms
    ms = (
        _days_from_civil(year, month, day) * _DAY_MS
        + ((hour * 60 + minute) * 60 + second) * 1000
        + (int(fraction[:3].ljust(3, "0")) if fraction else 0)
        - offset_ms
    )
    if second == 60 and not _ends_a_utc_month(ms, year, month):
        raise ValueError(f"no leap second at {text!r}: only 23:59:60 UTC on a month's last day")
    return ms


def _days_in_month(year: int, month: int) -> int:
    return 29 if month == 2 and calendar.isleap(year) else _MONTH_DAYS[month - 1]


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to the proleptic Gregorian date (year 0 too, which ``datetime``
    does not take): Howard Hinnant's ``days_from_civil``, years counted from March."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _ends_a_utc_month(ms: int, year: int, month: int) -> bool:
    """Whether ``ms``, a leap second of a date in ``year``-``month`` read as the next second
    (its fraction kept), falls in the first second of a UTC day that begins a month."""
    day, in_day = divmod(ms, _DAY_MS)
    if in_day >= 1000:
        return False
    # Within a day of the written date (offsets are under 24 hours): that day, which begins
    # its month when written as the 1st, or the day after, which begins the next month.
    next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
    return day in (_days_from_civil(year, month, 1), _days_from_civil(next_year, next_month, 1))
