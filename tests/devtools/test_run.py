"""`make run`'s callback settings: the signing secret it makes once and keeps, and when it
allows a receiver on this machine."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from devtools import run
from shared.callbacks import whsec
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
    assert Settings(callback_signing_secrets=secret).callback_signing_secrets is not None
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
