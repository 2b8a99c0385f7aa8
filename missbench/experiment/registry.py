"""Plugin discovery: one class per file in ``methods/`` and ``datasets/``, and the protocol files in
``protocols/``, found by folder in the benchmark root (missbench/experiment/root.py), as benchopt.

The folders are loaded by file path under the module names ``missbench.plugins.<kind>.<file>``;
they are never put on ``sys.path``, so the repository's ``datasets/`` cannot shadow Hugging
Face's ``datasets`` distribution (or any other) in site-packages. A process that reads a second root
(tests do) gets that root's file of a taken name under a name of its own, so every loaded class
stays what its module name says (pickle finds it). Nothing here imports torch until a
plugin folder is read, so commands that need no plugin stay fast.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple

from missbench.experiment.root import root

if TYPE_CHECKING:
    from missbench.core.dataset import Dataset
    from missbench.core.method import Method


class UnknownName(ValueError):
    """A method, data set or protocol name that is not registered."""


class Plugins(NamedTuple):
    """One plugin folder, read: name -> class, name -> file, name -> SHA-256 of the file as it was imported
    (provenance: the code that runs), and the files that failed to import, with the error."""

    classes: dict[str, type]
    files: dict[str, Path]
    sha256: dict[str, str]
    broken: dict[str, str]


def load_plugin(path: Path, kind: str) -> ModuleType:
    """Import one plugin file under ``missbench.plugins.<kind>.<stem>``, or, when another root's file holds
    that name, under ``<that name>_<hash of the path>``; a file is imported once per process."""
    name = f"missbench.plugins.{kind}.{path.stem}"
    if getattr(sys.modules.get(name), "__file__", str(path)) != str(path):
        name += "_" + hashlib.sha1(str(path).encode()).hexdigest()[:8]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise
    return module


def _base(kind: str) -> type:
    """The class every plugin of ``kind`` subclasses."""
    from missbench.core.dataset import Dataset
    from missbench.core.method import Method

    return {"methods": Method, "datasets": Dataset}[kind]


@cache
def _scan(folder: Path, kind: str) -> Plugins:
    """Every plugin class of ``folder`` (read once per folder and process)."""
    base = _base(kind)
    plugins = Plugins({}, {}, {}, {})
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            module = load_plugin(path, kind)
        except Exception as e:  # one broken plugin must not take the others down
            plugins.broken[f"{kind}/{path.name}"] = f"{type(e).__name__}: {e}"
            continue
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, base) and obj is not base and obj.__module__ == module.__name__:
                if obj.name in plugins.classes:
                    raise RuntimeError(f"{kind} name {obj.name!r} is defined twice ({path})")
                plugins.classes[obj.name], plugins.files[obj.name], plugins.sha256[obj.name] = obj, path, digest
    return plugins


def imported_file(cls: type) -> tuple[Path, str] | None:
    """(file, SHA-256 when imported) of a method or data set class of the current root; None for a class
    that is not one of its plugins (one defined elsewhere, e.g. in a test)."""
    for kind in ("methods", "datasets"):
        found = plugins(kind)
        name = getattr(cls, "name", None)
        if found.classes.get(name) is cls:
            return found.files[name], found.sha256[name]
    return None


def plugins(kind: str) -> Plugins:
    """The ``kind`` ("methods" or "datasets") plugins of the current root."""
    return _scan(root() / kind, kind)


def _get(kind: str, name: str) -> type:
    found = plugins(kind)
    if name not in found.classes:
        broken = [f"{f} ({err})" for f, err in found.broken.items()]
        hint = f"; could not load: {'; '.join(broken)}" if broken else ""
        raise UnknownName(f"unknown {kind[:-1]} {name!r}; valid: {', '.join(sorted(found.classes))}{hint}")
    return found.classes[name]


def method_class(name: str) -> type[Method]:
    return _get("methods", name)


def dataset_class(name: str) -> type[Dataset]:
    return _get("datasets", name)


def method_names() -> list[str]:
    return sorted(plugins("methods").classes)


def dataset_names() -> list[str]:
    return sorted(plugins("datasets").classes)


def protocol_names() -> list[str]:
    return sorted(p.stem for p in (root() / "protocols").glob("*.yaml"))


def protocol_path(name: str) -> Path:
    """A protocol given by name (protocols/<name>.yaml in the root) or by path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = root() / "protocols" / f"{name}.yaml"
    if not candidate.exists():
        raise UnknownName(f"unknown protocol {name!r}; valid: {', '.join(protocol_names())} (or a path to a .yaml file)")
    return candidate
