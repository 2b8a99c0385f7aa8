"""Plugin discovery: one class per file in ``methods/`` and ``datasets/``, and the protocol files in
``protocols/``, found by folder in the benchmark root and then in the shipped benchmark it extends
(missbench/experiment/root.py), as benchopt. A root's plugin of a name overrides the shipped one.

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
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple

import yaml

from missbench.experiment.root import hidden_names, plugin_folders

if TYPE_CHECKING:
    from missbench.core.dataset import Dataset
    from missbench.core.method import Method


class UnknownName(ValueError):
    """A method, data set or protocol name that is not registered."""


class Plugins(NamedTuple):
    """One plugin folder, read: name -> class, name -> file, name -> SHA-256 of the file as it was imported
    (provenance: the code that runs), the files that failed to import or register, each with its one-line
    reason, and name -> where it comes from ("root" or "shipped")."""

    classes: dict[str, type]
    files: dict[str, Path]
    sha256: dict[str, str]
    broken: dict[str, str]
    source: dict[str, str]


def one_line(error: BaseException) -> str:
    """An exception as ``Class: message`` on one line."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}".rstrip(": ")


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
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _declaration(kind: str) -> Callable[[type], str | None]:
    """The declaration check of ``kind``'s classes (missbench.core.method / missbench.core.dataset)."""
    from missbench.core import dataset, method

    return {"methods": method.declaration_problem, "datasets": dataset.declaration_problem}[kind]


def _base(kind: str) -> type:
    """The class every plugin of ``kind`` subclasses."""
    from missbench.core.dataset import Dataset
    from missbench.core.method import Method

    return {"methods": Method, "datasets": Dataset}[kind]


@cache
def _scan(folder: Path, kind: str) -> Plugins:
    """Every plugin class of ``folder`` (read once per folder and process). A file that fails to import (any error,
    ``sys.exit`` at import included) or to register (a class without a name of its own and no named one beside
    it, a name defined twice) is left out and named in ``broken`` with its one-line reason; the others load."""
    base = _base(kind)
    plugins = Plugins({}, {}, {}, {}, {})
    taken: dict[str, str] = {}  # names defined twice -> the first file
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        where = f"{kind}/{path.name}"
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            module = load_plugin(path, kind)
        except (Exception, SystemExit) as e:  # one broken plugin must not take the others down
            plugins.broken[where] = f"{one_line(e)} (while importing it)"
            continue
        found = [obj for obj in vars(module).values()
                 if inspect.isclass(obj) and issubclass(obj, base) and obj is not base and obj.__module__ == module.__name__]
        named = [c for c in found if isinstance(vars(c).get("name"), str) and vars(c)["name"]]
        if not named:  # classes without a name of their own are helper bases; a file of only those registers nothing
            if found:
                plugins.broken[where] = (f"defines no {kind[:-1]}: class {found[0].__name__} has no `name` of its own "
                                         f"(set name = \"...\"; a helper base class may stay beside a named class)")
            continue
        for cls in named:
            problem = _declaration(kind)(cls)
            if problem is not None:
                plugins.broken[where] = f"{kind[:-1]} {cls.__name__}: {problem}"
                continue
            if cls.name in plugins.classes or cls.name in taken:  # neither file's class is the one the name means
                first = taken.setdefault(cls.name, f"{kind}/{plugins.files[cls.name].name}" if cls.name in plugins.files else "")
                why = f"{kind[:-1]} name {cls.name!r} is defined in two files ({first} and {where}); rename one"
                plugins.broken[first] = plugins.broken[where] = why
                for table in (plugins.classes, plugins.files, plugins.sha256):
                    table.pop(cls.name, None)
                continue
            plugins.classes[cls.name], plugins.files[cls.name], plugins.sha256[cls.name] = cls, path, digest
    return plugins


def imported_file(cls: type) -> tuple[Path, str] | None:
    """(file, SHA-256 when imported) of a method or data set class of the current root (or the shipped benchmark
    it extends); None for a class that is not one of its plugins (one defined elsewhere, e.g. in a test)."""
    for kind in ("methods", "datasets"):
        found = plugins(kind)
        name = getattr(cls, "name", None)
        if found.classes.get(name) is cls:
            return found.files[name], found.sha256[name]
    return None


def plugins(kind: str) -> Plugins:
    """The ``kind`` ("methods" or "datasets") plugins of the current root, then those of the shipped benchmark
    that the root does not override or hide (`missbench.experiment.root.plugin_folders`)."""
    merged = Plugins({}, {}, {}, {}, {})
    hidden = hidden_names()
    for folder, source in plugin_folders(kind):
        scanned = _scan(folder, kind)
        for name, cls in scanned.classes.items():
            if name in merged.classes or source == "shipped" and name in hidden:
                continue
            merged.classes[name], merged.files[name], merged.sha256[name] = cls, scanned.files[name], scanned.sha256[name]
            merged.source[name] = source
        merged.broken.update({f"{where}" if source == "root" else f"shipped {where}": why for where, why in scanned.broken.items()})
    return merged


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


def protocol_files() -> dict[str, tuple[Path, str]]:
    """Protocol name -> (file, "root" or "shipped"): the root's protocols/, then the shipped ones it does not
    override or hide."""
    out: dict[str, tuple[Path, str]] = {}
    hidden = hidden_names()
    for folder, source in plugin_folders("protocols"):
        for path in sorted(folder.glob("*.yaml")):
            if path.stem not in out and not (source == "shipped" and path.stem in hidden):
                out[path.stem] = (path, source)
    return out


def inherited(path: Path, parent: str) -> list[Path]:
    """Where ``inherit: <parent>`` in ``path`` may point, in the order looked at: the file's own folder, then the
    root's protocols/ and the shipped benchmark's (``.yaml`` added to a bare name); the first that exists is the one."""
    name = parent if parent.endswith((".yaml", ".yml")) else f"{parent}.yaml"
    return list(dict.fromkeys([path.parent / name, *(folder / name for folder, _ in plugin_folders("protocols"))]))


def protocol_chain(path: Path) -> list[Path]:
    """A protocol file and the files it inherits from, nearest first, as they are now (a run's provenance);
    stops at a file that is missing, unreadable or already listed."""
    files: list[Path] = []
    while path.exists() and path.resolve() not in {f.resolve() for f in files}:
        files.append(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            break
        if not isinstance(data, dict) or not isinstance(data.get("inherit"), str):
            break
        path = next((c for c in inherited(path, data["inherit"]) if c.exists()), path)
    return files


def protocol_names() -> list[str]:
    return sorted(protocol_files())


def protocol_path(name: str) -> Path:
    """A protocol given by name (protocols/<name>.yaml in the root, else the shipped one) or by path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    found = protocol_files().get(name)
    if found is None:
        raise UnknownName(f"unknown protocol {name!r}; valid: {', '.join(protocol_names())} (or a path to a .yaml file)")
    return found[0]
