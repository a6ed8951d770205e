"""Structured logs: one JSON object a line, an event name and key=value fields.

Secrets never reach a log: settings hold them as SecretStr, no card data enters the service,
and the processor below drops any field whose name says it holds a secret.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from shared.config import Settings

_SECRET_FIELDS = ("api_key", "authorization", "secret", "password", "card", "number", "cvc")


def _drop_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in list(event):
        if any(marker in name.lower() for marker in _SECRET_FIELDS):
            event[name] = "[redacted]"
    return event


def configure_logging(settings: Settings) -> None:
    level = logging.DEBUG if settings.environment == "development" else logging.INFO
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
