"""The engine package's layers (README.md, "Layout and imports"): imports go down only, and no module of
missbench imports itself back through others. Every import counts, function-local ones included."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "missbench"
#: Each layer and the layers it may import (besides itself). Lower layers never import higher ones.
MAY_IMPORT = {
    "core": set(),
    "nets": {"core"},
    "experiment": {"core"},
    "store": {"core", "experiment"},
    "engine": {"core", "nets", "experiment", "store"},
    "realdata": {"core", "nets", "experiment", "store", "engine"},
    "report": {"core", "experiment", "store"},
    "executors": {"core", "experiment", "store", "engine"},
    "cli": {"core", "nets", "experiment", "store", "engine", "realdata", "report", "executors"},
}


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports (a name imported from a module counts as that module)."""
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = ".".join(base[: len(base) - node.level + 1] + [node.module or ""]).strip(".") if node.level else node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("missbench.") and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def layer(name: str) -> str:
    return name.split(".")[1] if name.count(".") else ""


def test_every_module_belongs_to_a_layer():
    assert {layer(m) for m in modules()} - {""} == set(MAY_IMPORT)


def test_imports_go_down_the_layers():
    known = modules()
    upward = [f"{name} imports {target}" for name, path in known.items() for target in imports(name, path, known)
              if layer(name) and layer(target) != layer(name) and layer(target) not in MAY_IMPORT[layer(name)]]
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        raise AssertionError(f"import cycle: {' -> '.join(e.args[1])}") from None


def test_the_checks_see_upward_imports_and_cycles(tmp_path):
    """The checks themselves can fail: a fake core module importing the engine, importing it back."""
    (tmp_path / "missbench" / "core").mkdir(parents=True)
    (tmp_path / "missbench" / "engine").mkdir()
    (tmp_path / "missbench" / "core" / "a.py").write_text("def f():\n    from missbench.engine.b import g\n")
    (tmp_path / "missbench" / "engine" / "b.py").write_text("from missbench.core import a\n")
    known = {"missbench.core.a": tmp_path / "missbench/core/a.py", "missbench.engine.b": tmp_path / "missbench/engine/b.py"}
    assert imports("missbench.core.a", known["missbench.core.a"], known) == {"missbench.engine.b"}
    assert imports("missbench.engine.b", known["missbench.engine.b"], known) == {"missbench.core.a"}
