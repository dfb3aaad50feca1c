"""The package's layout rules, checked on the source: no import cycles, every module in one
layer of :data:`LAYERS`, each layer importing only itself and the layers below it, and the
settings layer importable without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
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


#: The layers of the package, bottom to top. Each entry names a module or a package (all its
#: modules), relative to ``deeprestore``; a package's own file is ``PACKAGE.__init__``. Every
#: module is named by exactly one entry, and imports (at any level: inside functions and under
#: ``TYPE_CHECKING`` too) only modules of its own layer or of the layers before it. The public
#: names of ``deeprestore/__init__`` are strings imported on first use, not imports.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # names, PSNR, in-memory images, tiles, threads and devices: nothing of deeprestore below
    ("base", ("__init__", "methods", "metrics", "arrays", "tiles", "threads", "huge_pages",
              "execution")),
    ("physics", ("physics",)),  # H and its adjoint, kernels, degradations, noise
    ("denoisers", ("denoisers",)),  # f(x, sigma)
    ("models", ("models",)),  # the networks T_Θ(z)
    # what a run is told, readable without torch: settings, presets, the tasks and their options
    ("settings", ("config", "tasks.__init__", "tasks.registry", "tasks.options")),
    ("solvers", ("solvers",)),  # the engine
    ("problems", ("tasks.problem", "user_problem")),  # an image and its options → a Problem
    ("io", ("io",)),  # files: images, inputs, outputs, manifests, plots
    ("apps", ("apps",)),  # jobs, degrade, demo, reproduce, summary
    ("api", ("api",)),  # deeprestore.restore
    ("cli", ("cli", "__main__")),  # the command line
)
#: layers that stand side by side although one is listed above the other: neither imports
#: the other (networks know nothing of degradations or denoisers)
APART = (("models", "physics"), ("models", "denoisers"))
#: the modules that must import without torch (the settings layer: presets and task options
#: are read by tools that never run the engine)
TORCH_FREE = ("deeprestore", "deeprestore.methods", "deeprestore.config.presets",
              "deeprestore.config.resolve", "deeprestore.config.settings",
              "deeprestore.tasks.registry", "deeprestore.tasks.options")


def _key(name: str) -> str:
    """A module's name relative to deeprestore, a package's own file as ``PACKAGE.__init__``."""
    relative = name.removeprefix("deeprestore").removeprefix(".")
    return relative if name not in PACKAGES else f"{relative}.__init__".lstrip(".")


PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"}
ENTRIES = {entry: layer for layer, entries in LAYERS for entry in entries}
RANK = {layer: rank for rank, (layer, _) in enumerate(LAYERS)}


def _entries_naming(module: str) -> list[str]:
    key = _key(module)
    return [entry for entry in ENTRIES if key == entry or key.startswith(entry + ".")]


def layer_of(module: str) -> str:
    """The layer of a module of deeprestore (by its dotted name)."""
    (entry,) = _entries_naming(module)
    return ENTRIES[entry]


def _imported_from(importer: str, node: ast.ImportFrom) -> str:
    """The absolute name of the module of ``from MODULE import ...`` (relative ones resolved)."""
    if node.level == 0:
        return node.module or ""
    package = importer if importer in PACKAGES else importer.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0]
    return f"{base}.{node.module}" if node.module else base


def _all_imports(importer: str, path: Path) -> list[tuple[int, str]]:
    """(line, module) for every module of deeprestore that ``importer`` (its source at
    ``path``) imports, at any level; a module's parent packages count where their layer
    differs from it (importing ``a.b`` runs ``a/__init__``)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _imported_from(importer, node)
            targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        for target in (t for t in targets if t in MODULES):
            found += [(node.lineno, name) for name in _with_parents(target) if name in MODULES
                      and (name == target or layer_of(name) != layer_of(target))]
    return found


def upward_imports(modules: dict[str, Path]) -> list[str]:
    """Every import of a module above the importer's layer, or across :data:`APART`, as
    ``"importer (layer) imports target (layer), line N"``."""
    apart = {*APART, *((b, a) for a, b in APART)}
    bad = []
    for name, path in sorted(modules.items()):
        own = layer_of(name)
        for line, target in _all_imports(name, path):
            theirs = layer_of(target)
            if RANK[theirs] > RANK[own] or (own, theirs) in apart:
                bad.append(f"{name} ({own}) imports {target} ({theirs}), line {line}")
    return sorted(set(bad))


def test_every_module_is_in_exactly_one_layer() -> None:
    counts = {name: len(_entries_naming(name)) for name in MODULES}
    nowhere = sorted(n for n, c in counts.items() if c == 0)
    assert not nowhere, f"in no layer (add them to LAYERS): {nowhere}"
    several = sorted(n for n, c in counts.items() if c > 1)
    assert not several, f"named by several entries of LAYERS: {several}"
    unused = [e for e in ENTRIES if not any(e in _entries_naming(n) for n in MODULES)]
    assert not unused, f"LAYERS names what does not exist: {unused}"


def test_layers_import_only_downwards() -> None:
    bad = upward_imports(MODULES)
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_layer_check_finds_an_upward_import(tmp_path: Path) -> None:
    planted = tmp_path / "metrics.py"
    planted.write_text("def f():\n    from deeprestore.cli.main import main\n")
    found = upward_imports({"deeprestore.metrics": planted})
    assert found == ["deeprestore.metrics (base) imports deeprestore.cli.main (cli), line 2"]
    relative = tmp_path / "options.py"
    relative.write_text("from ..solvers import base\n")
    found = upward_imports({"deeprestore.tasks.options": relative})
    assert found == [
        "deeprestore.tasks.options (settings) imports deeprestore.solvers (solvers), line 1",
        "deeprestore.tasks.options (settings) imports deeprestore.solvers.base (solvers), line 1",
    ]
    beside = tmp_path / "skip.py"
    beside.write_text("from deeprestore.physics import operators\n")
    found = upward_imports({"deeprestore.models.skip": beside})
    assert found == [
        "deeprestore.models.skip (models) imports deeprestore.physics (physics), line 1",
        "deeprestore.models.skip (models) imports deeprestore.physics.operators (physics), line 1",
    ]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_settings_import_without_torch(module: str) -> None:
    code = (f"import sys, {module}; "
            "sys.exit('torch imported' if 'torch' in sys.modules else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr or done.stdout
