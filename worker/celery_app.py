"""The Celery app: ``celery -A worker.celery_app worker`` (and ``... flower``).

Configured once from settings. The pool and its size live here, not on a command line, so that
``make run``, compose and ECS all run the same tuned worker from the plain entry point.
"""

from __future__ import annotations

from celery import Celery

from shared.config import get_settings
from shared.logging import configure_logging

settings = get_settings()
configure_logging(settings)

app = Celery("payments", broker=settings.redis_url, include=["worker.tasks"])
app.conf.update(
    task_default_queue=settings.queue_name,
    task_serializer="json",
    accept_content=["json"],
    # The payment record in Redis is the source of truth for status, not a result backend.
    task_ignore_result=True,
    result_backend=None,
    # A charge is idempotent (same Stripe key on every attempt), so a message is acknowledged
    # only once its charge is recorded, and redelivered if the worker dies before that.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={
        # Unacknowledged messages come back after this long; every retry countdown is far
        # below it (CHARGE_RETRY_BACKOFF_MAX_SECONDS) so a retried task is never duplicated.
        "visibility_timeout": 300,
    },
    broker_connection_retry_on_startup=True,
    # Each charge waits on Stripe's network latency, not on CPU: see Settings.worker_pool.
    worker_pool=settings.worker_pool,
    worker_concurrency=settings.worker_concurrency,
    worker_hijack_root_logger=False,
    # Flower shows tasks live.
    worker_send_task_events=True,
    task_send_sent_event=True,
)
celery = app
