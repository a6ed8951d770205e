"""Structured logs: one JSON object a line, for our events and for the libraries' records alike.

Our events are structlog calls (an event name and key=value fields); records from uvicorn,
Celery, httpx or the Stripe SDK pass through the same processors, so every line a process writes
parses as JSON. Context bound per request or per task (request_id, payment_id, idempotency_key,
the client's key identity) rides along on every line.

Secrets never reach a log: settings hold them as SecretStr, no card data enters the service, and
the processor below blanks any field whose name says it holds a secret.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

from shared.settings.service_settings import Settings

_SECRET_FIELDS = ("api_key", "authorization", "secret", "password", "card", "number", "cvc")

# Per-request or per-call chatter at INFO: the SDK logs every Stripe request twice and httpx
# once more; our own events say what happened to the payment.
_QUIET = (
    "stripe",
    "httpx",
    "httpcore",
    "uvicorn.access",
    # Celery's "Task ... received" / "... succeeded in" lines: the charge.* events say it.
    "celery.worker.strategy",
    "celery.app.trace",
)


@functools.cache
def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(marker in lowered for marker in _SECRET_FIELDS)


def _drop_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in list(event):
        if _is_secret(name):
            event[name] = "[redacted]"
    return event


def _orjson_bytes(event: Any, **_: Any) -> bytes:
    return orjson.dumps(event, default=str)


def _orjson_str(event: Any, **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()


def write_line(line: str) -> None:
    """``line`` on stdout in one write, newline included.

    ``print`` writes the text and its newline apart, and with ``PYTHONUNBUFFERED`` (set in the
    images) each is a write of its own: a log line from another thread, on stderr (the same
    file or stream as stdout in a container's log), could land between them and leave two
    JSON objects on one line, which neither a log reader nor CloudWatch's EMF parses. One
    write of a line is appended whole."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    _drop_secrets,
]


def configure_logging(settings: Settings, *, level: int | str | None = None) -> None:
    if level is None:
        level = settings.log_level or (
            logging.DEBUG if settings.environment == "development" else logging.INFO
        )
    if isinstance(level, str):
        level = logging.getLevelNamesMapping()[level.upper()]
    # orjson straight to bytes: log lines sit on the accept path (docs/PERFORMANCE.md).
    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_orjson_bytes),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=_orjson_str),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn and Celery install handlers of their own: send everything through the root one.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
