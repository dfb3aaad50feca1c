"""The package's layout rules, checked on the source: no import cycles, and the layers import
only downwards (physics and denoisers know nothing of networks or solvers; models know nothing
of tasks; nothing below the CLI imports it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "deeprestore"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _top_level_imports(path: Path) -> set[str]:
    """Modules of deeprestore imported when ``path`` is imported (not inside functions, not
    under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("deeprestore"))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deeprestore"):
                found.add(node.module or "")
                for alias in node.names:  # from deeprestore.cli import restore (a module)
                    candidate = f"{node.module}.{alias.name}"
                    if candidate in MODULES:
                        found.add(candidate)

    visit(tree.body)
    return found


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: _top_level_imports(path) - {name} for name, path in MODULES.items()}


def _with_parents(name: str) -> set[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph ``edges`` (module → modules it imports), or None. A child
    importing its own parent package is not a cycle (the parent's __init__ runs first)."""
    state: dict[str, int] = {}
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = walk(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for module in sorted(edges):
        if module not in state:
            found = walk(module)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"p": set(), "p.x": {"p"}}) is None


def test_there_is_no_import_cycle() -> None:
    edges = {name: set().union(*(_with_parents(t) for t in targets)) & set(MODULES) - {name}
             for name, targets in GRAPH.items()}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


#: layer → the deeprestore layers it must not import (at any level of the module)
FORBIDDEN = {
    "deeprestore.physics": ("models", "solvers", "denoisers", "config", "io", "apps", "cli",
                            "tasks", "api"),
    "deeprestore.denoisers": ("models", "solvers", "config", "io", "apps", "cli", "tasks"),
    "deeprestore.models": ("solvers", "tasks", "physics", "io", "apps", "cli", "config"),
    "deeprestore.solvers": ("apps", "cli", "tasks", "api"),
    "deeprestore.config": ("apps", "cli", "io", "solvers", "models"),
    "deeprestore.io": ("cli",),
    "deeprestore.apps": ("cli.main", "cli.restore", "cli.tools"),
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downwards(layer: str) -> None:
    bad = []
    for name, path in MODULES.items():
        if name != layer and not name.startswith(layer + "."):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deeprestore."):
                target = node.module.removeprefix("deeprestore.")
                if any(target == f or target.startswith(f + ".") for f in FORBIDDEN[layer]):
                    bad.append(f"{name} imports deeprestore.{target}")
    assert not bad, "; ".join(bad)
