"""`make run`'s choices: which Redis it uses, the callbacks' signing secret it makes once and
keeps, and when it allows a receiver on this machine."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
import redis
from standardwebhooks import Webhook

from devtools import run
from devtools.processes import ProcessGroup, free_port, temporary_redis
from shared.callbacks import whsec
from shared.callbacks.signing import signing_secrets
from shared.settings.service_settings import Settings


def test_the_secret_is_a_valid_whsec_of_32_bytes_kept_0600(tmp_path: Path) -> None:
    run_dir = tmp_path / ".run"  # not there yet on a first run
    secret = run.callback_signing_secret(run_dir)
    assert whsec.is_whsec(secret)
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    path = run_dir / run.CALLBACK_WHSEC_FILE
    assert path.read_text().strip() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # What the processes read: the settings' check, and a Standard Webhooks signer.
    assert signing_secrets(Settings(callback_signing_secrets=secret)) == (secret,)
    Webhook(secret)


def test_the_secret_is_stable_across_runs(tmp_path: Path) -> None:
    first = run.callback_signing_secret(tmp_path)
    assert run.callback_signing_secret(tmp_path) == first
    assert run.callback_settings(tmp_path, {})["CALLBACK_SIGNING_SECRETS"] == first
    other = tmp_path / "elsewhere"
    assert run.callback_signing_secret(other) != first  # random, not derived


def test_a_file_without_a_valid_secret_is_replaced(tmp_path: Path) -> None:
    (tmp_path / run.CALLBACK_WHSEC_FILE).write_text("whsec_tooshort\n")
    secret = run.callback_signing_secret(tmp_path)
    assert whsec.is_whsec(secret)
    assert stat.S_IMODE((tmp_path / run.CALLBACK_WHSEC_FILE).stat().st_mode) == 0o600


def test_the_environment_wins_and_nothing_is_written(tmp_path: Path) -> None:
    mine = "whsec_" + base64.b64encode(b"k" * 32).decode()
    added = run.callback_settings(
        tmp_path, {"CALLBACK_SIGNING_SECRETS": mine, "CALLBACK_ALLOW_PRIVATE_NETWORKS": "false"}
    )
    assert added == {}
    assert not (tmp_path / run.CALLBACK_WHSEC_FILE).exists()


@pytest.mark.parametrize(
    ("environment", "allowed"),
    [(None, True), ("development", True), ("test", True), ("production", False)],
)
def test_a_receiver_on_this_machine_is_allowed_outside_production(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environment: str | None, allowed: bool
) -> None:
    environ = {} if environment is None else {"ENVIRONMENT": environment}
    added = run.callback_settings(tmp_path, environ)
    assert ("CALLBACK_ALLOW_PRIVATE_NETWORKS" in added) is allowed
    # Every process starts with what make run gives it (production refuses the flag).
    monkeypatch.delenv("ENVIRONMENT", raising=False)
    for name, value in {**environ, **added}.items():
        monkeypatch.setenv(name, value)
    Settings(stripe_api_key="sk_live_x")


# --- Redis: the one REDIS_URL names, else one of make run's own ---------------------------


def test_a_set_redis_url_that_does_not_answer_stops_the_run(tmp_path: Path) -> None:
    """A REDIS_URL that was set is the Redis meant: when it does not answer, the run stops and
    says so, rather than putting payments somewhere else; the password stays off the console."""
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    group = ProcessGroup(tmp_path / "logs")
    with pytest.raises(run.RedisNotAnswering) as refused:
        run.start_redis({"REDIS_URL": url}, tmp_path, group)
    assert "does not answer" in str(refused.value)
    assert "127.0.0.1" in str(refused.value)
    assert "s3cret" not in str(refused.value)
    assert group.procs == {}  # nothing started in its place


@pytest.mark.integration
def test_without_redis_url_the_run_starts_a_redis_of_its_own(tmp_path: Path) -> None:
    """Unset, make run never looks for a Redis on the default port (which may be anyone's): it
    starts its own, with the AOF under .run/redis, and every process gets that one's URL."""
    port = free_port()
    with ProcessGroup(tmp_path / "logs") as group:
        url = run.start_redis({}, tmp_path, group, port=port)
        assert url == f"redis://127.0.0.1:{port}/0"
        assert set(group.procs) == {"redis"}
        client = redis.Redis.from_url(url)
        try:
            client.set("payments:probe", "1")
            assert client.config_get("dir")["dir"] == str(tmp_path / "redis")
            assert client.config_get("appendonly")["appendonly"] == "yes"
        finally:
            client.close()


@pytest.mark.integration
def test_a_set_redis_url_that_answers_is_used_and_nothing_is_started(tmp_path: Path) -> None:
    with ProcessGroup(tmp_path / "theirs") as theirs:
        (tmp_path / "data").mkdir()
        with temporary_redis(tmp_path / "data", theirs) as url:
            ours = ProcessGroup(tmp_path / "logs")
            assert run.start_redis({"REDIS_URL": url}, tmp_path, ours) == url
            assert ours.procs == {}
            assert not (tmp_path / "redis").exists()
