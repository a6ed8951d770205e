"""Which settings the workers read, found in the code: the modules a worker process loads
(every module of worker/ and, transitively, the project modules they import, at the top or inside
a function) and the attribute reads in them."""

from __future__ import annotations

import ast
import inspect
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ._tools import REPO

PROJECT_PACKAGES = ("api", "worker", "shared")
VALIDATORS = ("model_validator", "field_validator")


@dataclass(frozen=True)
class Read:
    module: str
    function: str  # the enclosing function ("" at module level)
    line: int
    settings: bool  # inside the Settings class (a validator: every process runs it)

    def __str__(self) -> str:
        return f"{self.module}:{self.line} ({self.function or 'module level'})"


def _module_file(name: str) -> Path | None:
    path = REPO.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(tree: ast.Module, name: str, package: bool) -> set[str]:
    """Module names an import in ``tree`` may load (``from a import b``: ``a`` and ``a.b``)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            prefix = node.module or ""
            if node.level:
                base = name.split(".")[: None if package else -1]
                base = base[: len(base) - node.level + 1]
                prefix = ".".join([*base, *([node.module] if node.module else [])])
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


@cache
def worker_modules() -> dict[str, ast.Module]:
    """Every project module a worker process can load, by name, parsed."""
    todo = [f"worker.{p.stem}" for p in (REPO / "worker").glob("*.py") if p.stem != "__init__"]
    loaded: dict[str, ast.Module] = {}
    while todo:
        name = todo.pop()
        if name in loaded or name.split(".")[0] not in PROJECT_PACKAGES:
            continue
        file = _module_file(name)
        if file is None:
            continue  # a name imported from a module, not a module
        tree = ast.parse(file.read_text(encoding="utf-8"))
        loaded[name] = tree
        parts = name.split(".")
        todo.extend(".".join(parts[:n]) for n in range(1, len(parts)))  # its packages load first
        todo.extend(_imported(tree, name, file.name == "__init__.py"))
    return loaded


def _attributes(node: ast.AST) -> set[str]:
    """Attribute names read under ``node`` (``x.name``, ``getattr(x, "name")``)."""
    names = set()
    for child in ast.walk(node):
        name = child.attr if isinstance(child, ast.Attribute) else _getattr_name(child)
        if name is not None:
            names.add(name)
    return names


def _is_validator(function: ast.FunctionDef) -> bool:
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Name) and target.id in VALIDATORS:
            return True
    return False


@cache
def _settings_class() -> tuple[str, ast.ClassDef]:
    """The Settings class as the workers' parse of its module holds it (the same node)."""
    from shared.settings.service_settings import Settings

    module = Settings.__module__
    tree = worker_modules().get(module) or ast.parse(
        Path(inspect.getfile(Settings)).read_text(encoding="utf-8")
    )
    found = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Settings")
    return module, found


def settings_readers(env_name: str) -> set[str]:
    """The attributes of Settings that read the setting ``env_name``: its field, and every
    property or method of Settings that reads one of those (validators aside: they are no
    attribute anyone reads, and count as reads themselves)."""
    _, cls = _settings_class()
    methods = {
        f.name: _attributes(f)
        for f in cls.body
        if isinstance(f, ast.FunctionDef) and not _is_validator(f)
    }
    readers = {env_name.lower()}
    while grown := {m for m, read in methods.items() if m not in readers and read & readers}:
        readers |= grown
    return readers


def _getattr_name(node: ast.AST) -> str | None:
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "getattr"
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        return node.args[1].value
    return None


@cache
def worker_reads() -> dict[str, list[Read]]:
    """Attribute name -> where the workers' code reads it. In the Settings class only its
    validators count (every process runs them); its properties are accessors, counted where
    they are read (``settings_readers``)."""
    _, settings_class = _settings_class()
    reads: dict[str, list[Read]] = defaultdict(list)

    def visit(module: str, node: ast.AST, function: str, in_settings: bool) -> None:
        if node is settings_class:
            for method in settings_class.body:
                if isinstance(method, ast.FunctionDef) and _is_validator(method):
                    visit(module, method, method.name, True)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        name = node.attr if isinstance(node, ast.Attribute) else _getattr_name(node)
        if name is not None:
            reads[name].append(Read(module, function, getattr(node, "lineno", 0), in_settings))
        for child in ast.iter_child_nodes(node):
            visit(module, child, function, in_settings)

    for module, tree in worker_modules().items():
        visit(module, tree, "", False)
    return dict(reads)
