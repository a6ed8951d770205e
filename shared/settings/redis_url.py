"""``REDIS_URL``'s Sentinel form, parsed in one place for every Redis client of the service.

A plain ``redis://``, ``rediss://`` or ``unix://`` URL names one Redis. The Sentinel
form names the Sentinels that know which Redis is the primary of a replicated set::

    redis+sentinel://[[user]:password@]host1:26379,host2:26379,host3:26379/<master-name>/<db>
    rediss+sentinel://...   TLS to the Sentinels and to the data nodes alike
                            (?ssl_cert_reqs=required|optional|none, ?ssl_ca_certs=/path.pem)

The password in the URL is the data nodes' (``requirepass``); the Sentinels' own password, when
they have one (``requirepass`` in sentinel.conf), is ``REDIS_SENTINEL_PASSWORD``. A port left out
is 26379, a db left out is 0. Every client asks a Sentinel for the primary when it connects
and again after a connection error or a ``READONLY`` answer (a demoted primary), so it follows a
failover by itself: redis-py's ``SentinelConnectionPool`` for the API and the workers (built
here), kombu's Sentinel transport for Celery's broker and Flower (``broker()``, used by
``worker.celery_app``).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.connection
import redis.asyncio.sentinel
import redis.connection
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.retry import Retry

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
DEFAULT_SENTINEL_PORT = 26379
CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
QUERY_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs")


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL says."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ssl_cert_reqs: str = "required"
    ssl_ca_certs: str | None = None

    def tls_options(self) -> dict[str, Any]:
        """redis-py connection options for TLS (none without it)."""
        if not self.tls:
            return {}
        options: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": self.ssl_cert_reqs}
        if self.ssl_ca_certs:
            options["ssl_ca_certs"] = self.ssl_ca_certs
        return options


def _host_port(item: str, url: str) -> tuple[str, int]:
    item = item.strip()
    if not item:
        raise ValueError(f"REDIS_URL {_redacted(url)!r}: an empty Sentinel address")
    if item.startswith("["):  # [ipv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"REDIS_URL {_redacted(url)!r}: a Sentinel address without a host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"REDIS_URL {_redacted(url)!r}: bad Sentinel port {port_text!r}")
    return host, int(port_text)


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    return f"{scheme}{sep}***@{hosts}" if at and userinfo else url


def parse_sentinel_url(url: str) -> SentinelTarget | None:
    """The Sentinel form's parts; None for a plain (single Redis) URL. ValueError, naming the
    problem, for a malformed Sentinel URL."""
    scheme = url.partition("://")[0].lower()
    if scheme not in SENTINEL_SCHEMES:
        return None
    tls = SENTINEL_SCHEMES[scheme]
    try:
        parts = urlsplit(url)
    except ValueError:  # its message may quote the netloc, password included
        raise ValueError(f"REDIS_URL {_redacted(url)!r} is not a URL") from None
    if parts.fragment:
        raise ValueError(
            f"REDIS_URL {_redacted(url)!r}: a '#' ends the URL; percent-encode it (%23) "
            "in a password"
        )
    # urllib reads the user and password but not a list of hosts, which is read here.
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if parts.username is not None and parts.password is None:
        # "secret@host": the one field is the password, as redis-py reads it
        username, password = None, username
    hosts = parts.netloc.rpartition("@")[2]
    sentinels = tuple(_host_port(item, url) for item in hosts.split(","))
    path = parts.path.removeprefix("/").split("/")
    if not path[0]:
        raise ValueError(
            f"REDIS_URL {_redacted(url)!r}: the Sentinel form needs the master's name: "
            f"{scheme}://host1:26379,host2:26379/<master-name>/<db>"
        )
    if len(path) > 2 or (len(path) == 2 and path[1] and not path[1].isdigit()):
        raise ValueError(f"REDIS_URL {_redacted(url)!r}: the path must be /<master-name>/<db>")
    db = int(path[1]) if len(path) == 2 and path[1] else 0
    options: dict[str, str] = {}
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        if name not in QUERY_OPTIONS:
            raise ValueError(
                f"REDIS_URL {_redacted(url)!r}: unknown option {name!r} "
                f"(the Sentinel form takes {', '.join(QUERY_OPTIONS)})"
            )
        options[name] = values[-1]
    cert_reqs = options.get("ssl_cert_reqs", "required").lower()
    if cert_reqs not in CERT_REQS:
        raise ValueError(f"REDIS_URL: ssl_cert_reqs must be one of {', '.join(CERT_REQS)}")
    if options and not tls:
        raise ValueError(f"REDIS_URL: {', '.join(options)} need the TLS form rediss+sentinel://")
    return SentinelTarget(
        sentinels=sentinels,
        master_name=unquote(path[0]),
        db=db,
        username=username,
        password=password,
        tls=tls,
        ssl_cert_reqs=cert_reqs,
        ssl_ca_certs=options.get("ssl_ca_certs"),
    )


def sentinel_options(
    target: SentinelTarget, sentinel_password: str | None, socket_timeout: float
) -> dict[str, Any]:
    """How to reach the Sentinels themselves: their password, TLS, and bounded timeouts (a
    dead Sentinel must not hold up the question to the next one)."""
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        **target.tls_options(),
    }
    if sentinel_password:
        options["password"] = sentinel_password
    return options


def data_options(target: SentinelTarget) -> dict[str, Any]:
    """How to talk to the primary once found: db, credentials, TLS."""
    options: dict[str, Any] = {"db": target.db, **target.tls_options()}
    if target.username:
        options["username"] = target.username
    if target.password:
        options["password"] = target.password
    return options


def sync_master(
    target: SentinelTarget, sentinel_password: str | None, **client_options: Any
) -> redis.Redis:
    """A redis-py client of the current primary; it re-asks the Sentinels after a connection
    error or a READONLY answer."""
    timeout = float(client_options.get("socket_connect_timeout") or 1.0)
    # One immediate retry per Sentinel, not redis-py's default backoff (seconds per question):
    # with no Sentinel answering, a request is a prompt 503, not a long hang.
    options = {**sentinel_options(target, sentinel_password, timeout),
               "retry": Retry(NoBackoff(), retries=1)}  # fmt: skip
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=options
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        target.master_name, redis_class=redis.Redis, **data_options(target), **client_options
    )
    return client


def async_master(
    target: SentinelTarget, sentinel_password: str | None, **client_options: Any
) -> redis.asyncio.Redis:
    """The asyncio twin of :func:`sync_master`."""
    timeout = float(client_options.get("socket_connect_timeout") or 1.0)
    options = {**sentinel_options(target, sentinel_password, timeout),
               "retry": AsyncRetry(NoBackoff(), retries=1)}  # fmt: skip
    sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=options
    )
    client: redis.asyncio.Redis = sentinel.master_for(
        target.master_name,
        redis_class=redis.asyncio.Redis,
        **data_options(target),
        **client_options,
    )
    return client


@dataclass(frozen=True, slots=True)
class Broker:
    """Celery's broker for a REDIS_URL: its URL, kombu transport and their options."""

    url: str
    transport: str
    transport_options: dict[str, Any]
    use_ssl: dict[str, Any] | None = None


def broker(url: str, sentinel_password: str | None, socket_timeout: float) -> Broker:
    """The project's kombu transport (``worker.transport``) for a plain URL; its Sentinel
    variant for the Sentinel form, as kombu spells it: ``sentinel://[:password@]host:port/db``
    per Sentinel, joined by ``;``, with ``master_name`` and the Sentinels' own options in the
    transport options."""
    target = parse_sentinel_url(url)
    if target is None:
        return Broker(url, "worker.transport:Transport", {})
    auth = ""
    if target.password or target.username:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password or '', safe='')}@"
    urls = ";".join(
        f"sentinel://{auth}{f'[{host}]' if ':' in host else host}:{port}/{target.db}"
        for host, port in target.sentinels
    )
    options: dict[str, Any] = {
        "master_name": target.master_name,
        "sentinel_kwargs": sentinel_options(target, sentinel_password, socket_timeout),
    }
    use_ssl: dict[str, Any] | None = None
    if target.tls:
        use_ssl = {"ssl_cert_reqs": CERT_REQS[target.ssl_cert_reqs]}
        if target.ssl_ca_certs:
            use_ssl["ssl_ca_certs"] = target.ssl_ca_certs
    return Broker(urls, "worker.transport:SentinelTransport", options, use_ssl)


# --- a plain URL's primary moved (ElastiCache's primary endpoint, a DNS name, follows a
# failover): a connection still open to the demoted node gets READONLY on every write. As
# redis-py's Sentinel connections do, such a connection is closed and the error becomes a
# connection error, which the client's one retry (and kombu's reconnect) meets with a new
# connection, to wherever the name now points.
READONLY_MESSAGE = "READONLY: this Redis is a replica now (failover); reconnecting to the primary"


class PrimaryConnection(redis.connection.Connection):
    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except ReadOnlyError as exc:
            self.disconnect()  # type: ignore[no-untyped-call]
            raise RedisConnectionError(READONLY_MESSAGE) from exc


class PrimarySSLConnection(redis.connection.SSLConnection):
    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except ReadOnlyError as exc:
            self.disconnect()  # type: ignore[no-untyped-call]
            raise RedisConnectionError(READONLY_MESSAGE) from exc


class AsyncPrimaryConnection(redis.asyncio.connection.Connection):
    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ReadOnlyError as exc:
            await self.disconnect()
            raise RedisConnectionError(READONLY_MESSAGE) from exc


class AsyncPrimarySSLConnection(redis.asyncio.connection.SSLConnection):
    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ReadOnlyError as exc:
            await self.disconnect()
            raise RedisConnectionError(READONLY_MESSAGE) from exc


def primary_connection_class(url: str, *, asynchronous: bool) -> type[Any] | None:
    """The connection class for a plain ``redis://`` or ``rediss://`` URL (None: keep
    redis-py's own, e.g. for a unix socket)."""
    scheme = url.partition("://")[0].lower()
    if scheme == "redis":
        return AsyncPrimaryConnection if asynchronous else PrimaryConnection
    if scheme == "rediss":
        return AsyncPrimarySSLConnection if asynchronous else PrimarySSLConnection
    return None
