"""The api modules import one way: each can be imported first, in a fresh interpreter (no import
circle), and a route module takes what it shares with others from the shared modules
(``api.request_helpers``, ``api.deps``, ...), never from another route module."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

API = Path(__file__).resolve().parents[2] / "api"
MODULES = sorted(f"api.{path.stem}" for path in API.glob("*.py") if path.stem != "__init__")

# Each module imported as the first project module of the interpreter: the project's modules
# are dropped from sys.modules before each, so a circle fails whichever module starts it.
FRESH_IMPORTS = """
import importlib, sys
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("api", "shared", "worker")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ImportError as exc:
        print(f"{name}: {exc}")
"""


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every ``from api.module import name`` in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("api."):
            found += [(str(node.module), alias.name) for alias in node.names]
    return found


def _is_route_module(path: Path) -> bool:
    """A module that builds a ``router`` (``APIRouter(...)`` or ``scopes.guarded_router(...)``)."""
    return re.search(r"^router = ", path.read_text(), re.MULTILINE) is not None


def test_every_api_module_imports_first_without_a_circle() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FRESH_IMPORTS, *MODULES],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=API.parent,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_no_route_module_imports_another_route_module_or_a_private_name() -> None:
    routes = {f"api.{p.stem}" for p in API.glob("*.py") if _is_route_module(p)}
    assert {"api.payments", "api.refund_routes", "api.admin", "api.webhooks"} <= routes
    found = []
    for path in sorted(API.glob("*.py")):
        for module, name in _imports(path):
            if name.startswith("_"):
                found.append(f"{path.name} imports {module}.{name}")
            if _is_route_module(path) and module in routes:
                found.append(f"{path.name} imports route module {module}")
    assert found == []
