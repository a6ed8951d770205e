"""A worker's stdout and stderr are one log (a container's, or the file a process group
writes): every line in it is one JSON object, the autoscaling signal's EMF line included, however
many threads log at the same time and however the streams are buffered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Four threads log events on stderr while the main thread publishes the queue depth on stdout.
SCRIPT = textwrap.dedent(
    """
    import threading

    import fakeredis
    import structlog

    from shared.log_config import configure_logging
    from worker import maintenance
    from worker.singletons import settings

    configure_logging(settings)
    log = structlog.get_logger("busy")
    client = fakeredis.FakeRedis()
    stop = threading.Event()

    def chatter():
        while not stop.is_set():
            log.info("charge.succeeded", payment_id="pay_x", amount_minor=4299)

    threads = [threading.Thread(target=chatter) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(300):
        maintenance.publish_queue_depth(client)
    stop.set()
    for thread in threads:
        thread.join()
    """
)


def test_the_queue_depth_line_is_never_cut_by_a_log_line_from_another_thread(
    tmp_path: Path,
) -> None:
    log = tmp_path / "worker.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ENVIRONMENT": "test", "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, stdout=out,
                       stderr=subprocess.STDOUT, check=True, timeout=120)  # fmt: skip
    lines = log.read_text().splitlines()
    broken = [line for line in lines if not _is_one_json_object(line)]
    assert broken == []
    assert sum(1 for line in lines if line.startswith('{"_aws"')) == 300


def _is_one_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
