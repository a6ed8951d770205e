"""Process-wide tuning that the API applies once it has started, and that the benchmark's
yardsticks (bench/bare_app.py, bench/script_app.py) apply the same way, so that a ratio
between them measures their code, not a different process set-up."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """What exists once the app has started lives until exit (modules, routes, models,
    clients): move it out of every garbage-collection pass, which otherwise walks it again and
    again under load and stalls requests for tens of milliseconds (the tail latency)."""
    gc.collect()
    gc.freeze()
