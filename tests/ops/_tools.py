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
