"""A payment's deadline: ``expires_at`` (RFC 3339) or ``expires_in`` (seconds) on a request.

A payment whose charge has not been sent to Stripe by its deadline ends ``expired``, never
charged (``start_attempt.lua`` refuses an attempt past it, ``expire.lua`` ends it); one whose
attempt started before it is settled by Stripe's answer. The deadline must be in the future and
at most MAX_DEADLINE_SECONDS ahead, which RECORD_TTL_SECONDS (at least a day) outlives, so a
record always holds its own deadline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from shared.errors import InvalidRequest
from shared.payments.rfc3339 import ms_from_rfc3339

MAX_DEADLINE_SECONDS = 24 * 3600
RULES = (
    "expires_at: an RFC 3339 date-time with its offset (such as 2026-01-01T12:00:00Z), in the "
    f"future and at most {MAX_DEADLINE_SECONDS // 3600} hours ahead; expires_in: whole "
    f"seconds from 1 to {MAX_DEADLINE_SECONDS}. One or the other, not both."
)


@dataclass(frozen=True, slots=True)
class Deadline:
    ms: int  # ms since the epoch
    # The deadline as the request gave it, for the request's fingerprint: the same request
    # retried later is still the same request.
    given: str


def _invalid(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, code=f"{param}_invalid", param=param)


def deadline_of(
    expires_at: str | None, expires_in: int | None, *, now: float | None = None
) -> Deadline | None:
    """The request's deadline, if it gives one; InvalidRequest (400) naming the field that is
    wrong: not RFC 3339 (as ``shared.payments.rfc3339`` reads it), in the past, too far ahead,
    or both fields given."""
    if expires_at is None and expires_in is None:
        return None
    now = time.time() if now is None else now
    if expires_at is not None and expires_in is not None:
        raise InvalidRequest(
            "Give expires_at or expires_in, not both.", code="parameters_exclusive",
            param="expires_in",
        )  # fmt: skip
    if expires_in is not None:
        if not 1 <= expires_in <= MAX_DEADLINE_SECONDS:
            raise _invalid(
                "expires_in", f"expires_in must be whole seconds from 1 to {MAX_DEADLINE_SECONDS}."
            )
        return Deadline(int((now + expires_in) * 1000), f"expires_in={expires_in}")
    assert expires_at is not None
    try:
        ms = ms_from_rfc3339(expires_at)
    except ValueError:
        raise _invalid(
            "expires_at",
            "expires_at must be an RFC 3339 date-time with its offset, such as "
            "2026-01-01T12:00:00Z.",
        ) from None
    if ms <= now * 1000:
        raise _invalid("expires_at", "expires_at must be in the future.")
    if ms > (now + MAX_DEADLINE_SECONDS) * 1000:
        raise _invalid(
            "expires_at",
            f"expires_at must be at most {MAX_DEADLINE_SECONDS // 3600} hours ahead.",
        )
    return Deadline(ms, f"expires_at={ms}")
