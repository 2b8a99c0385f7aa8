"""Plugin discovery: one class per file in ``methods/`` and ``datasets/``, found by folder (as benchopt).

The folders are loaded by file path under the module names ``missbench.plugins.<kind>.<file>``;
they are never put on ``sys.path``, so the repository's ``datasets/`` cannot shadow Hugging
Face's ``datasets`` distribution (or any other) in site-packages.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

from missbench.core.dataset import Dataset
from missbench.core.method import Method

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"methods": (ROOT / "methods", Method), "datasets": (ROOT / "datasets", Dataset)}
PROTOCOLS = ROOT / "protocols"


class UnknownName(ValueError):
    """A method, data set or protocol name that is not registered."""


def load_plugin(path: Path, kind: str) -> ModuleType:
    """Import one plugin file under ``missbench.plugins.<kind>.<stem>``."""
    name = f"missbench.plugins.{kind}.{path.stem}"
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


#: Plugin files that failed to import, with the error: reported when a name is not found.
BROKEN: dict[str, str] = {}


@cache
def _registry(kind: str) -> dict[str, type]:
    folder, base = FOLDERS[kind]
    found: dict[str, type] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            module = load_plugin(path, kind)
        except Exception as e:  # one broken plugin must not take the others down
            BROKEN[f"{kind}/{path.name}"] = f"{type(e).__name__}: {e}"
            continue
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, base) and obj is not base and obj.__module__ == module.__name__:
                if obj.name in found:
                    raise RuntimeError(f"{kind} name {obj.name!r} is defined twice ({path})")
                found[obj.name] = obj
    return found


def _get(kind: str, name: str) -> type:
    reg = _registry(kind)
    if name not in reg:
        broken = [f"{f} ({err})" for f, err in BROKEN.items() if f.startswith(kind)]
        hint = f"; could not load: {'; '.join(broken)}" if broken else ""
        raise UnknownName(f"unknown {kind[:-1]} {name!r}; valid: {', '.join(sorted(reg))}{hint}")
    return reg[name]


def method_class(name: str) -> type[Method]:
    return _get("methods", name)


def dataset_class(name: str) -> type[Dataset]:
    return _get("datasets", name)


def method_names() -> list[str]:
    return sorted(_registry("methods"))


def dataset_names() -> list[str]:
    return sorted(_registry("datasets"))


def protocol_names() -> list[str]:
    return sorted(p.stem for p in PROTOCOLS.glob("*.yaml"))


def protocol_path(name: str) -> Path:
    """A protocol given by name (protocols/<name>.yaml) or by path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = PROTOCOLS / f"{name}.yaml"
    if not candidate.exists():
        raise UnknownName(f"unknown protocol {name!r}; valid: {', '.join(protocol_names())} (or a path to a .yaml file)")
    return candidate
