from __future__ import annotations

import fakeredis
import pytest

from shared.rate_limit import RateLimitTimeout, SharedRateLimiter


def test_the_first_call_goes_at_once_and_the_next_must_wait_its_turn() -> None:
    client = fakeredis.FakeRedis()
    limiter = SharedRateLimiter(client, rate_per_second=1)
    other_worker = SharedRateLimiter(client, rate_per_second=1)

    limiter.acquire(max_wait=0)
    with pytest.raises(RateLimitTimeout):
        other_worker.acquire(max_wait=0.1)  # the budget is shared, not per process


def test_a_rate_of_zero_means_no_limit() -> None:
    limiter = SharedRateLimiter(fakeredis.FakeRedis(), rate_per_second=0)
    for _ in range(100):
        assert limiter.acquire(max_wait=0) == 0.0
