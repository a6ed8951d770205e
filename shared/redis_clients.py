"""Redis clients configured the same way for the API and the workers."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.settings.redis_url import (
    Broker,
    async_master,
    broker,
    parse_sentinel_url,
    primary_connection_class,
    sync_master,
)
from shared.settings.service_settings import Settings

# One immediate retry covers a pooled connection that died with a Redis restart; more would
# turn "Redis is down" into a long hang instead of a prompt 503.
RETRIES = 1


def _sentinel_password(settings: Settings) -> str | None:
    secret = settings.redis_sentinel_password
    return secret.get_secret_value() if secret else None


def async_redis(settings: Settings, *, for_pubsub: bool = False) -> redis.asyncio.Redis:
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_socket_timeout,
        # A subscription idles between events: no read timeout, a periodic health check.
        "socket_timeout": None if for_pubsub else settings.redis_socket_timeout,
        "health_check_interval": 15 if for_pubsub else 0,
        "retry": AsyncRetry(NoBackoff(), retries=RETRIES),
    }
    # REDIS_URL's Sentinel form (shared/settings/redis_url.py): the primary the Sentinels name,
    # found
    # again after a failover (a connection error or READONLY is retried on the new one).
    target = parse_sentinel_url(settings.redis_url)
    if target is not None:
        return async_master(target, _sentinel_password(settings), **options)
    client = redis.asyncio.Redis.from_url(settings.redis_url, **options)
    connection_class = primary_connection_class(settings.redis_url, asynchronous=True)
    if connection_class is not None:  # READONLY from a demoted primary: reconnect, retry once
        client.connection_pool.connection_class = connection_class  # (from_url keeps rediss')
    return client


def sync_redis(settings: Settings) -> redis.Redis:
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_socket_timeout,
        "socket_timeout": max(settings.redis_socket_timeout, 5.0),
        "retry": Retry(NoBackoff(), retries=RETRIES),
    }
    target = parse_sentinel_url(settings.redis_url)
    if target is not None:
        return sync_master(target, _sentinel_password(settings), **options)
    client = redis.Redis.from_url(settings.redis_url, **options)
    connection_class = primary_connection_class(settings.redis_url, asynchronous=False)
    if connection_class is not None:
        client.connection_pool.connection_class = connection_class
    return client


def celery_broker(settings: Settings) -> Broker:
    """Celery's broker URL, kombu transport and options for REDIS_URL (either form)."""
    return broker(settings.redis_url, _sentinel_password(settings), settings.redis_socket_timeout)
