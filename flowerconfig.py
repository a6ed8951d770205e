"""Flower's settings, read from the working directory by ``celery -A worker.celery_app flower``.

Flower is never open: it shows every task and can revoke tasks and shut workers down. So it
refuses to start without credentials (``FLOWER_BASIC_AUTH=user:password``, which Flower reads
itself), and its HTTP API stays behind the same login.
"""

import os

if not os.environ.get("FLOWER_BASIC_AUTH"):
    raise SystemExit(
        "Flower needs FLOWER_BASIC_AUTH=user:password (make run generates one); "
        "it does not run without authentication."
    )
if os.environ.get("FLOWER_UNAUTHENTICATED_API", "").lower() in ("1", "true", "yes", "on"):
    raise SystemExit("FLOWER_UNAUTHENTICATED_API would open Flower's API; unset it.")

# Tasks show up live: Flower switches the workers' task events on.
enable_events = True
# A worker that stopped (scaled in) leaves the list instead of showing as offline forever.
purge_offline_workers = 300
