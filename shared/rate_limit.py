"""A request rate shared by every worker process, kept in Redis (GCRA, one Lua call a request).

Celery's own ``rate_limit`` is per worker, so N workers would make N times the calls; Stripe's
limit is per account. This limiter spaces all the workers' Stripe calls ``1/rate`` seconds apart,
and a caller that is early waits rather than being dropped.
No well-kept library fits here: limits/redis-rate-limiters refuse rather than schedule, and the
script below is the whole algorithm.
"""

from __future__ import annotations

import time

import redis

# Generic cell rate algorithm. KEYS[1]: theoretical arrival time (TAT) in microseconds.
# ARGV[1]: emission interval (us), ARGV[2]: burst tolerance (us). Returns 0 when the call may
# go now (and books it), else the microseconds to wait before asking again.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - burst
if now < allow_at then
  return allow_at - now
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 0
"""

KEY = "payments:stripe_rate"


class RateLimitTimeout(Exception):
    """The shared budget is booked further ahead than the caller may wait."""


class SharedRateLimiter:
    def __init__(self, client: redis.Redis, rate_per_second: float, *, key: str = KEY) -> None:
        self._client = client
        self._key = key
        self._enabled = rate_per_second > 0
        self._interval_us = int(1_000_000 / rate_per_second) if self._enabled else 0
        # No burst: calls are spaced evenly, so no one-second window holds more than rate + 1.
        self._burst_us = 0
        self._script = client.register_script(GCRA_SCRIPT)

    def acquire(self, *, max_wait: float) -> float:
        """Block until a call may go; returns the seconds waited. Raises RateLimitTimeout."""
        if not self._enabled:
            return 0.0
        started = time.monotonic()
        while True:
            wait_us = int(self._script(keys=[self._key], args=[self._interval_us, self._burst_us]))
            if wait_us == 0:
                return time.monotonic() - started
            waited = time.monotonic() - started
            if waited + wait_us / 1e6 > max_wait:
                raise RateLimitTimeout(f"Stripe budget booked {wait_us / 1e6:.1f}s ahead")
            time.sleep(wait_us / 1e6)
