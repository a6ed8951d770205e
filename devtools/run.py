"""`make run`: the whole service in the foreground until Ctrl-C (or SIGTERM).

- Redis: ``REDIS_URL`` when it is set (and answers), else a redis-server of its own on
  127.0.0.1:6399 (AOF on, data in .run/redis): never whatever answers on the default port.
- Stripe: real Stripe when ``STRIPE_API_KEY`` is set and ``STRIPE_API_BASE`` is not; otherwise
  the localstripe emulator on 127.0.0.1:8420.
- One Celery worker (the tuned pool from the Celery config), Flower on 5555 with basic auth,
  the API on 8080.
- Callbacks: each client's signed with a secret derived from ``CALLBACK_SIGNING_SECRETS``, else
  from a master secret made once and kept in .run/callback-signing-secret (a client reads its
  own at GET /clients/me/callback-secret); a receiver on this machine is allowed outside
  production.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from devtools.processes import (
    ROOT,
    ProcessGroup,
    api_argv,
    celery_worker_argv,
    emulator_argv,
    python_module,
    redis_reachable,
    redis_server_argv,
    wait_for_port,
)
from shared.callbacks import whsec

EMULATOR_PORT = 8420
API_PORT = 8080
FLOWER_PORT = 5555
EMBEDDED_REDIS_PORT = 6399
CALLBACK_WHSEC_FILE = "callback-signing-secret"


def say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


def main() -> int:
    run_dir = ROOT / ".run"
    group = ProcessGroup(run_dir / "logs")
    env: dict[str, str] = {}
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    try:
        try:
            redis_url = start_redis(os.environ, run_dir, group)
        except RedisNotAnswering as exc:
            say(str(exc))
            return 1
        env["REDIS_URL"] = redis_url

        if os.environ.get("STRIPE_API_KEY") and not os.environ.get("STRIPE_API_BASE"):
            say("Stripe: real Stripe (STRIPE_API_KEY is set)")
        elif os.environ.get("STRIPE_API_BASE"):
            say(f"Stripe: {os.environ['STRIPE_API_BASE']}")
        else:
            proc = group.start("stripe-emulator", emulator_argv(EMULATOR_PORT))
            wait_for_port(EMULATOR_PORT, proc=proc)
            env["STRIPE_API_BASE"] = f"http://127.0.0.1:{EMULATOR_PORT}"
            # The emulator sends the API its signed webhooks (registered once the API is up).
            env["STRIPE_WEBHOOK_SECRET"] = os.environ.get("STRIPE_WEBHOOK_SECRET") or (
                "whsec_" + secrets.token_urlsafe(24)
            )
            env.setdefault("ENVIRONMENT", os.environ.get("ENVIRONMENT", "development"))
            say(f"Stripe: emulator (localstripe) at {env['STRIPE_API_BASE']}")

        api_keys = os.environ.get("API_KEYS")
        if not api_keys:
            api_keys = "dev_" + secrets.token_urlsafe(18)
            say("API_KEYS not set: generated a client key for this run (also in .run/api-key)")
        env["API_KEYS"] = api_keys
        first_key = api_keys.split(",")[0].strip()
        if not first_key.startswith("sha256:"):  # a digest is no key to hand out
            (run_dir / "api-key").write_text(first_key + "\n")
            (run_dir / "api-key").chmod(0o600)
        callback_env = callback_settings(run_dir, {**os.environ, **env})
        env.update(callback_env)
        if "CALLBACK_SIGNING_SECRETS" in callback_env:
            say(
                "CALLBACK_SIGNING_SECRETS not set: callbacks are signed with secrets derived from "
                f"the one in {run_dir / CALLBACK_WHSEC_FILE} (made once, kept across runs); a "
                "client reads its own at GET /clients/me/callback-secret"
            )
        if "CALLBACK_ALLOW_PRIVATE_NETWORKS" in callback_env:
            say("Callbacks may go to this machine (CALLBACK_ALLOW_PRIVATE_NETWORKS=true)")
        flower_auth = os.environ.get("FLOWER_BASIC_AUTH") or f"admin:{secrets.token_urlsafe(12)}"
        group.start("worker", celery_worker_argv(), env=env, stdout_to_console=True)
        group.start(
            "flower",
            python_module(
                "celery",
                "-A",
                "worker.celery_app",
                "flower",
                f"--port={FLOWER_PORT}",
                "--address=127.0.0.1",
            ),
            env={**env, "FLOWER_BASIC_AUTH": flower_auth},
        )
        api = group.start("api", api_argv_public(), env=env, stdout_to_console=True)
        wait_for_port(API_PORT, proc=api)
        if "stripe-emulator" in group.procs:
            from devtools.stripe_emulator import register_webhook_endpoint

            webhook_url = f"http://127.0.0.1:{API_PORT}/webhooks/stripe"
            secret = env["STRIPE_WEBHOOK_SECRET"].split(",")[0].strip()
            register_webhook_endpoint(env["STRIPE_API_BASE"], webhook_url, secret)
            say(f"Stripe webhooks: the emulator sends its events to {webhook_url} (signed)")
        wait_for_port(FLOWER_PORT, proc=group.procs["flower"])
        user = flower_auth.split(":", 1)[0]
        say(
            f"API:    http://127.0.0.1:{API_PORT}  (docs: http://127.0.0.1:{API_PORT}/docs; "
            "Authorize there with the client key below)"
        )
        say(
            f"Flower: http://127.0.0.1:{FLOWER_PORT}  (user {user!r}; password in "
            "FLOWER_BASIC_AUTH"
            + (
                ""
                if "FLOWER_BASIC_AUTH" in os.environ
                else f", generated for this run: {flower_auth.split(':', 1)[1]}"
            )
            + ")"
        )
        say(f"Client key: Authorization: Bearer $(cat {run_dir / 'api-key'})")
        say(f"Logs of Redis, the emulator and Flower: {group.log_dir}")
        say("First payment: in another terminal, `make demo` (creates a test customer and pays).")
        say("Ctrl-C stops everything.")

        while not stopping:
            for name, proc in group.procs.items():
                if proc.poll() is not None:
                    say(f"{name} exited with {proc.returncode}; stopping everything")
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        say("stopping...")
        group.stop_all(grace=120)
        say("stopped")


class RedisNotAnswering(RuntimeError):
    pass


def start_redis(
    environ: Mapping[str, str], run_dir: Path, group: ProcessGroup, port: int = EMBEDDED_REDIS_PORT
) -> str:
    """The Redis URL every process of the run gets. ``REDIS_URL`` when set: it must answer (the
    run stops rather than put payments somewhere else). Unset, a redis-server of our own,
    whatever else listens on Redis's default port, so a run never writes into a Redis that
    nobody chose."""
    given = environ.get("REDIS_URL", "").strip()
    if given:
        scheme, sep, rest = given.partition("://")
        where = f"{scheme}{sep}{rest.rpartition('@')[2]}"  # no password on the console
        if not redis_reachable(given):
            raise RedisNotAnswering(
                f"Redis: REDIS_URL ({where}) does not answer; start it, or unset REDIS_URL "
                "and `make run` starts a Redis of its own"
            )
        say(f"Redis: REDIS_URL ({where})")
        return given
    data = run_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    proc = group.start("redis", redis_server_argv(port, data))
    wait_for_port(port, proc=proc)
    url = f"redis://127.0.0.1:{port}/0"
    say(f"Redis: REDIS_URL unset, started one of our own at {url} (AOF in {data})")
    return url


def callback_signing_secret(run_dir: Path) -> str:
    """The Standard Webhooks secret of `make run`'s callbacks, ``whsec_`` and the base64 of 32
    random bytes: made on the first run and kept in .run/ (mode 0600), so a receiver set up
    once keeps verifying across runs. A file that holds no valid secret is replaced."""
    path = run_dir / CALLBACK_WHSEC_FILE
    if path.exists():
        kept = path.read_text().strip()
        if whsec.is_whsec(kept):
            path.chmod(0o600)
            return kept
        path.unlink()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    run_dir.mkdir(parents=True, exist_ok=True)
    # Created 0600 (never readable by others, not even for a moment), and only if absent.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secret + "\n")
    return secret


def callback_settings(run_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """What `make run` adds to the processes' environment for callbacks: the kept secret when
    CALLBACK_SIGNING_SECRETS is unset (else a callback would be a dead letter, never sent
    unsigned), and, outside production (which refuses it), CALLBACK_ALLOW_PRIVATE_NETWORKS so
    that a receiver on this machine (``http://127.0.0.1:...``) is allowed. What the
    environment sets itself wins."""
    added: dict[str, str] = {}
    if not environ.get("CALLBACK_SIGNING_SECRETS", "").strip():
        added["CALLBACK_SIGNING_SECRETS"] = callback_signing_secret(run_dir)
    production = environ.get("ENVIRONMENT", "development") == "production"
    if not production and not environ.get("CALLBACK_ALLOW_PRIVATE_NETWORKS"):
        added["CALLBACK_ALLOW_PRIVATE_NETWORKS"] = "true"
    return added


def api_argv_public() -> list[str]:
    """The documented entry point: uvicorn api.main:app --host 0.0.0.0 --port 8080."""
    argv = api_argv(API_PORT)
    argv[argv.index("--host") + 1] = "0.0.0.0"
    return argv


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
