"""Helpers for the deployment-artefact tests: repo paths, external linters, YAML loading."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

# Secret values the repo must never contain: Stripe secret/restricted keys of real length.
STRIPE_KEY_RE = re.compile(r"\b(?:sk|rk)_(?:test|live)_[A-Za-z0-9]{24,}")


def find_tool(name: str) -> str:
    """The executable `name` from this interpreter's venv bin, else from PATH; skip if absent."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    pytest.skip(f"`{name}` is not installed; it comes with the dev extra: pip install -e '.[dev]'")


def in_ci() -> bool:
    """True under CI: `.ci/run` sets PAYMENTS_CI=1; GitHub Actions and most runners set CI."""
    return any(
        os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")
        for name in ("PAYMENTS_CI", "CI")
    )


def find_system_tool(name: str, debian_package: str) -> str:
    """A tool from a Debian package (not pip): skipped when absent on a developer's machine,
    a failure under CI, where `.ci/run` installs it, so that its checks never silently vanish."""
    found = shutil.which(name)
    if found:
        return found
    message = f"`{name}` is not installed: apt-get install -y {debian_package}"
    if in_ci():
        pytest.fail(f"{message} (.ci/run installs it)")
    pytest.skip(message)


def run_tool(name: str, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [path or find_tool(name), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def load_yaml(path: Path) -> Any:
    yaml = pytest.importorskip("yaml")
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_cfn(path: Path) -> Any:
    """A CloudFormation template with short-form tags as their long form (!Ref x -> {Ref: x},
    !Sub s -> {Fn::Sub: s}, !GetAtt a.b -> {Fn::GetAtt: [a, b]}), as CloudFormation reads it."""
    yaml = pytest.importorskip("yaml")

    class CfnLoader(yaml.SafeLoader):  # type: ignore[misc,name-defined]
        pass

    def construct(loader: Any, suffix: str, node: Any) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {suffix if suffix == "Ref" else f"Fn::{suffix}": value}

    CfnLoader.add_multi_constructor("!", construct)
    with path.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)  # a SafeLoader subclass: no arbitrary objects


# --- what each process reads from the environment (shared/settings/service_settings.py)
# ------------------------
# Secrets and clients' settings the workers read: Redis (its URL carries the password) and
# Stripe; CALLBACK_SIGNING_SECRETS, which sign every callback (worker/callback_delivery.py), and
# API_CLIENTS, whose entries may carry a client's own callback_signing_secrets that sign that
# client's callbacks instead (checked as the worker starts). REDIS_SENTINEL_PASSWORD only with
# a redis+sentinel:// REDIS_URL (compose's `ha` profile; ElastiCache has no Sentinels).
WORKER_SECRETS = ("REDIS_URL", "STRIPE_API_KEY", "CALLBACK_SIGNING_SECRETS", "API_CLIENTS")
SENTINEL_SECRETS = ("REDIS_SENTINEL_PASSWORD",)
# The callback URL rules the workers check again at send time (shared.callbacks.url_rules), as the
# API
# did at accept: both must see the same values.
WORKER_CALLBACK_SETTINGS = ("CALLBACK_ALLOWED_HOSTS", "CALLBACK_ALLOW_PRIVATE_NETWORKS")
# Secrets only other processes read, and the Settings attributes that read them: no module
# of worker/ may use these (test_process_settings.py), or the workers would need them too.
NOT_READ_BY_WORKERS = {
    "API_KEYS": ("api_keys", "client_keys"),  # the API authenticates; no secret of a worker
    "STRIPE_WEBHOOK_SECRET": ("stripe_webhook_secret",),  # the API verifies Stripe's webhooks
    "PAYMENT_ID_SECRET": ("payment_id_secret", "payment_id_key"),  # the API derives ids
    "FLOWER_BASIC_AUTH": ("flower_basic_auth",),  # Flower reads it itself
}
# Reads of those in code the workers load that leave the workers without any need of the
# secret: (module, function, attribute) -> why.
READ_BUT_NOT_NEEDED_BY_WORKERS: dict[tuple[str, str, str], str] = {
    ("shared.settings.api_clients", "load", "client_keys"): (
        "builds every client, API_KEYS' too; the workers keep only the clients' own callback "
        "signing secrets (shared.callbacks.signing), which an API_KEYS client never has, so "
        "they find the same without API_KEYS"
    ),
}
# Secrets the API reads: each reaches the API in compose and ECS (API_CLIENTS only when set:
# an optional Secrets Manager secret in ECS). CALLBACK_SIGNING_SECRETS: the API shows each
# client the callback secret derived from them (GET /clients/me/callback-secret).
API_SECRETS = ("REDIS_URL", "STRIPE_API_KEY", "API_KEYS", "API_CLIENTS", "STRIPE_WEBHOOK_SECRET",
               "PAYMENT_ID_SECRET", "CALLBACK_SIGNING_SECRETS")  # fmt: skip
# Secrets kept from the workers and Flower in both: PAYMENT_ID_SECRET makes the payment ids,
# which only the API does.
API_ONLY_SECRETS = ("PAYMENT_ID_SECRET",)
# Settings of clients only the API reads: their default callback endpoints, used at accept.
API_CLIENT_SETTINGS = ("CALLBACK_ENDPOINTS",)
