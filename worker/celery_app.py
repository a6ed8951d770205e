"""The Celery app: ``celery -A worker.celery_app worker`` (and ``... flower``).

Configured once from settings. The pool and its size live here, not on a command line, so that
``make run``, compose and ECS all run the same tuned worker from the plain entry point.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import setup_logging
from kombu import Queue

from shared.log_config import configure_logging
from shared.redis_clients import celery_broker
from shared.settings.service_settings import get_settings
from worker import fair_queues

settings = get_settings()
configure_logging(settings)

# REDIS_URL's Redis, through kombu's Redis transport with one fix (see worker.transport); for
# the Sentinel form, kombu's Sentinel transport with the same fix
# (shared.settings.redis_url.broker).
broker = celery_broker(settings)
# What a worker imports as it starts: every task module, and the maintenance rounds it runs
# in the background (started on worker_ready).
app = Celery(
    "payments",
    broker=broker.url,
    include=["worker.tasks", "worker.lifecycle_tasks", "worker.maintenance"],
)
app.conf.update(
    broker_transport=broker.transport,
    task_default_queue=settings.queue_name,
    # Callbacks have a queue of their own, so a slow receiver never delays a charge; a worker
    # consumes both unless told otherwise (`-Q callbacks` runs them apart). A worker that
    # consumes QUEUE_NAME also consumes each client's charge queue, found as it runs
    # (worker.fair_queues.ClientQueues).
    task_queues=(Queue(settings.queue_name), Queue(settings.callback_queue)),
    task_routes={"payments.callback": {"queue": settings.callback_queue}},
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
        # A message whose worker died (SIGKILL, OOM, lost host) comes back after the visibility
        # timeout, found by a sweep every RESTORE_INTERVAL_SECONDS: about 65 s by default,
        # instead of kombu's 1 hour + ~100 s. Settings refuses a timeout that a running charge
        # or a retry countdown could reach, which would deliver a live message twice.
        "visibility_timeout": settings.visibility_timeout_seconds,
        "unacked_restore_interval": settings.restore_interval_seconds,
        "unacked_restore_throttle": 1,
        "health_check_interval": 10,
        # The service sends no message priorities: one list a queue, so that the BRPOP over
        # every client's queue names each once, not once per priority step.
        "priority_steps": [0],
        "fair_queues": fair_queues.transport_options(settings),
        **broker.transport_options,
    },
    broker_connection_retry_on_startup=True,
    broker_connection_retry=True,
    broker_connection_max_retries=None,
    # Warm shutdown (SIGTERM) lets running charges finish; orchestrators give 120 s.
    worker_cancel_long_running_tasks_on_connection_loss=False,
    # Each charge waits on Stripe's network latency, not on CPU: see Settings.worker_pool.
    worker_pool=settings.worker_pool,
    worker_concurrency=settings.worker_concurrency,
    worker_hijack_root_logger=False,
    # Task events cost a Redis publish each (received, started, succeeded), a sizeable share of
    # a worker's CPU. They start off, and Flower switches them on in every worker while it runs
    # (flowerconfig.py: enable_events), so tasks still show up live there.
    worker_send_task_events=settings.worker_send_task_events,
    task_send_sent_event=settings.worker_send_task_events,
)

app.steps["consumer"].add(fair_queues.ClientQueues)

if broker.use_ssl:  # rediss+sentinel://: TLS to the primary the Sentinels name
    app.conf.broker_use_ssl = broker.use_ssl


def log_level(configured: str | None, command_line: int | str | None) -> int | str:
    """LOG_LEVEL when set, as in the API; else the command line's ``--loglevel``; else INFO."""
    return configured or command_line or logging.INFO


@setup_logging.connect
def _json_logs(loglevel: Any = None, **_: Any) -> None:
    """The worker's logs (Celery's own included) as JSON lines, instead of Celery's format."""
    configure_logging(settings, level=log_level(settings.log_level, loglevel))
