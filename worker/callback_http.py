"""One callback's HTTP exchange under a hard deadline for the whole of it.

httpx's timeouts apply to each network operation: a receiver that answers one byte every few
seconds never trips a read timeout, and would hold the worker's thread for as long as it
likes. So the request runs on an event loop of its own under ``asyncio.timeout``: whatever
the receiver does, the exchange (connect, TLS handshake, sending, the status line and
headers) is over by the deadline, and its connection closed. Every attempt opens a connection
of its own: it goes to an address checked for this host, with TLS verified against this
host's name, and must never reuse one made for another name that resolved to the same
address.
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from functools import lru_cache

import httpx

NO_KEEPALIVE = httpx.Limits(max_connections=None, max_keepalive_connections=0)


class DeadlineExceeded(Exception):
    """The exchange did not reach the answer's status line before the deadline."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    retry_after: str | None


@lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """One TLS context for every attempt of the process (loading the CA bundle is costly)."""
    return httpx.create_ssl_context()


def post(
    url: httpx.URL,
    *,
    content: bytes,
    headers: dict[str, str],
    extensions: dict[str, str],
    seconds: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Answer:
    """POST and return the status and ``Retry-After`` once the headers are in (the body is
    never read); DeadlineExceeded when ``seconds`` pass first; httpx's errors otherwise."""
    exchange = _post(url, content, headers, extensions, seconds, transport)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # a worker's thread: no loop of its own
        return asyncio.run(exchange)
    # A caller inside a running loop (an async test, a tool) cannot nest another in its
    # thread: the exchange gets a thread of its own.
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, exchange).result()


async def _post(
    url: httpx.URL,
    content: bytes,
    headers: dict[str, str],
    extensions: dict[str, str],
    seconds: float,
    transport: httpx.AsyncBaseTransport | None,
) -> Answer:
    transport = transport or httpx.AsyncHTTPTransport(verify=tls_context(), limits=NO_KEEPALIVE)
    # httpcore closes a connection whose connect or TLS handshake ended by its own timeout, but
    # leaves one cancelled in its handshake to the garbage collector. So connecting and the
    # handshake each end by their own timeout, together within the deadline, and the deadline
    # itself only ever cuts the sending and the wait for the status line, which httpcore
    # closes behind it.
    timeout = httpx.Timeout(seconds, connect=seconds * 0.45)
    try:
        async with (
            asyncio.timeout(seconds),
            httpx.AsyncClient(transport=transport, follow_redirects=False, timeout=timeout) as c,
            c.stream(
                "POST", url, content=content, headers=headers, extensions=extensions
            ) as response,
        ):
            return Answer(response.status_code, response.headers.get("retry-after"))
    except TimeoutError:
        raise DeadlineExceeded(f"no answer within {seconds:g} s") from None


def retry_after_seconds(value: str | None, now: float) -> float:
    """Seconds a ``Retry-After`` asks for (delta-seconds or an HTTP date); 0 when absent or
    unreadable."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
