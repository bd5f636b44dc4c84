"""The code's shape that the design relies on, checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "daemon" / "dockwarden"
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text()) for path in sorted(PACKAGE.glob("*.py"))}


def _imports(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "dockwarden":
                found |= {f"dockwarden.{alias.name}" for alias in node.names}
    return found


def test_no_function_is_longer_than_the_limit() -> None:
    """No function or method in the package spans more than 60 lines, so each reads on one screen."""
    long = [
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_only_engine_imports_docker() -> None:
    """docker-py is imported by the engine module alone: one chokepoint for the Docker Engine."""
    users = sorted(
        name for name, tree in _modules().items() if any(i.split(".")[0] == "docker" for i in _imports(tree))
    )
    assert users == ["engine"]


@pytest.mark.parametrize("module", ["gc", "recovery", "runner", "rollback", "upgrade"])
def test_module_does_not_depend_on_the_cycle(module: str) -> None:
    """GC, recovery, the runner, rollback and the transaction never import the update cycle."""
    assert "dockwarden.cycle" not in _imports(_modules()[module])


# Keys of Docker's list and inspect documents. `engine` reads them into views; `recreate`, `upgrade` and
# `gate` work on whole inspect documents (the create body, the transaction, the health gate).
DOCKER_KEYS = frozenset(
    {
        "Id",
        "Names",
        "Name",
        "Image",
        "ImageID",
        "State",
        "Status",
        "Health",
        "FinishedAt",
        "Labels",
        "Created",
        "Size",
        "Config",
        "HostConfig",
        "NetworkMode",
        "RepoTags",
        "RepoDigests",
    }
)
DOCUMENT_MODULES = {"engine", "recreate", "upgrade", "gate"}


def _docker_keys(tree: ast.Module) -> set[str]:
    """Docker keys a module indexes, as `x["Key"]` or `x.get("Key")`."""
    found = set()
    for node in ast.walk(tree):
        key: ast.expr | None
        if isinstance(node, ast.Subscript):
            key = node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            key = node.args[0] if node.args else None
        else:
            continue
        if isinstance(key, ast.Constant) and key.value in DOCKER_KEYS:
            found.add(str(key.value))
    return found


def test_other_modules_read_the_engines_views_not_docker_json() -> None:
    """Outside engine, recreate, upgrade and gate, no module indexes a Docker JSON key: it reads views."""
    readers = {
        name: sorted(keys)
        for name, tree in _modules().items()
        if name not in DOCUMENT_MODULES and (keys := _docker_keys(tree))
    }
    assert readers == {}
