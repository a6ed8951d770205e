"""Settings that refuse to start say what to change; LOG_LEVEL reaches the workers too."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog
from pydantic import ValidationError

from shared.config import Settings


def test_a_stripe_timeout_too_long_for_the_visibility_timeout_says_what_to_change() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(environment="test", stripe_timeout_seconds=30)
    message = str(refused.value)
    assert "2 x STRIPE_TIMEOUT_SECONDS + 10 = 70 s" in message
    assert "Raise VISIBILITY_TIMEOUT_SECONDS to 71 or more" in message
    assert "lower STRIPE_TIMEOUT_SECONDS below 25" in message
    # ... and following the advice works.
    Settings(environment="test", stripe_timeout_seconds=30, visibility_timeout_seconds=71)
    Settings(environment="test", stripe_timeout_seconds=24.9)


@pytest.mark.parametrize(
    ("configured", "command_line", "expected"),
    [
        ("DEBUG", logging.INFO, "DEBUG"),  # LOG_LEVEL wins over the entry point's --loglevel
        (None, logging.WARNING, logging.WARNING),
        (None, None, logging.INFO),
    ],
)
def test_workers_take_log_level_over_their_command_line(
    configured: str | None, command_line: int | None, expected: int | str
) -> None:
    from worker.celery_app import log_level

    assert log_level(configured, command_line) == expected


@pytest.fixture
def logging_restored() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers, config = root.level, root.handlers[:], structlog.get_config()
    yield
    root.setLevel(level)
    root.handlers[:] = handlers
    structlog.configure(**config)


@pytest.mark.usefixtures("logging_restored")
def test_a_worker_started_with_loglevel_info_logs_at_log_level(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery.signals import setup_logging

    import worker.celery_app

    monkeypatch.setattr(
        worker.celery_app, "settings", Settings(environment="test", log_level="WARNING")
    )
    # What `celery -A worker.celery_app worker --loglevel=INFO` does when it sets up logging.
    setup_logging.send(sender=None, loglevel=logging.INFO, logfile=None, format="", colorize=False)
    assert logging.getLogger().level == logging.WARNING
