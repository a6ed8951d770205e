"""Exponential backoff: the one formula behind every retry and every wait-and-try-again loop.

The n-th wait (from 0) is ``base x 2^n``, capped at ``cap``. Where many workers may retry the
same thing at once (Stripe after an outage, a receiver that came back), jitter spreads their
retries instead of sending them together: ``"full"`` draws the wait from ``[0, delay]``,
``"equal"`` from ``[delay / 2, delay]`` (never much shorter than planned). A loop waiting for
its own connection to come back needs none.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Literal

Jitter = Literal["none", "full", "equal"]

# 2^64 times any base is past every cap; a larger exponent would only overflow the float.
_MAX_EXPONENT = 64


def backoff(retries: int, *, base: float, cap: float, jitter: Jitter = "none") -> float:
    """Seconds to wait before try ``retries + 1`` (``retries`` tries already failed)."""
    delay = min(cap, base * 2.0 ** min(max(retries, 0), _MAX_EXPONENT))
    # Jitter spreads retries in time; it is no secret, so the standard generator does.
    if jitter == "full":
        return random.uniform(0, delay)  # noqa: S311
    if jitter == "equal":
        return delay / 2 + random.uniform(0, delay / 2)  # noqa: S311
    return delay


def delays(*, base: float, cap: float, jitter: Jitter = "none") -> Iterator[float]:
    """The waits of a loop that tries until something answers: ``base``, doubling, ``cap``
    from then on."""
    retries = 0
    while True:
        yield backoff(retries, base=base, cap=cap, jitter=jitter)
        retries += 1
