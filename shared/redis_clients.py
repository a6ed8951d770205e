"""Redis clients configured the same way for the API and the workers."""

from __future__ import annotations

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.config import Settings

# One immediate retry covers a pooled connection that died with a Redis restart; more would
# turn "Redis is down" into a long hang instead of a prompt 503.
RETRIES = 1


def async_redis(settings: Settings, *, for_pubsub: bool = False) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_socket_timeout,
        # A subscription idles between events: no read timeout, a periodic health check.
        socket_timeout=None if for_pubsub else settings.redis_socket_timeout,
        health_check_interval=15 if for_pubsub else 0,
        retry=AsyncRetry(NoBackoff(), retries=RETRIES),
    )


def sync_redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_socket_timeout,
        socket_timeout=max(settings.redis_socket_timeout, 5.0),
        retry=Retry(NoBackoff(), retries=RETRIES),
    )
