"""The benchmark root: the folder whose plugins (methods/, datasets/, protocols/) a command uses and
whose results/ it writes into, as benchopt's benchmark folder.

A root is a folder holding methods/ or protocols/ (datasets/ alone is not enough: data folders are often
called that, and so is Hugging Face's package in site-packages). The root of a process is, first match:

1. the folder given by ``--root DIR`` (`use_root`);
2. ``$MISSBENCH_ROOT``: what local and SLURM jobs inherit from the submitting process
   (missbench/executors/environment.py), and what tests/conftest.py pins to the tests' checkout;
3. the current directory, when it is a root;
4. the checkout holding the imported ``missbench`` package, when it is a root, so that
   ``python /path/to/bench.py`` works from any folder.

So ``pytest``, ``python -m pytest`` and ``bench.py`` in any checkout use that checkout's plugins,
whichever checkout an editable install points at.

A root extends the shipped benchmark (the checkout holding the package): its methods/, datasets/ and
protocols/ come first (a plugin of a shipped name overrides it), and the shipped ones stay visible
unless the root's ``missbench.yaml`` hides them: ``shipped: false`` (none of them) or ``hide: [name,
...]`` (those). ``bench.py list`` says where each plugin comes from.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The environment variable that carries the root to jobs and subprocesses.
ENV = "MISSBENCH_ROOT"
#: The plugin folders.
PLUGIN_FOLDERS = ("methods", "datasets", "protocols")
#: The plugin folders that make a folder a root.
MARKERS = ("methods", "protocols")
#: The checkout the running ``missbench`` package comes from (the fallback root).
PACKAGE_CHECKOUT = Path(__file__).resolve().parents[2]

#: A root's settings file (optional): ``shipped: false`` and ``hide: [names]`` (the shipped plugins it hides).
SETTINGS = "missbench.yaml"

_given: Path | None = None


class RootError(ValueError):
    """A folder given as the root that is not one, or no root to be found."""


def is_root(path: Path) -> bool:
    """Whether ``path`` holds methods/ or protocols/."""
    return any((path / name).is_dir() for name in MARKERS)


def _checked(path: Path | str, source: str) -> Path:
    folder = Path(path).expanduser().resolve()
    if not is_root(folder):
        raise RootError(f"{source} {folder} is not a benchmark root: it holds neither methods/ nor protocols/")
    return folder


def use_root(path: Path | str | None) -> None:
    """Make ``path`` this process's root (``--root``); None leaves the choice to the rules above."""
    global _given
    _given = None if path is None else _checked(path, "--root")


def settings() -> dict:
    """The root's ``missbench.yaml`` ({} without one), checked: a one-line `RootError` naming the file and key."""
    path = root() / SETTINGS
    if not path.exists():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise RootError(f"{path}: cannot read it ({type(e).__name__}: {' '.join(str(e).split())})") from None
    if not isinstance(data, dict) or set(data) - {"shipped", "hide"}:
        raise RootError(f"{path}: expected a mapping of the keys shipped (true or false) and hide (a list of names)")
    if not isinstance(data.get("shipped", True), bool):
        raise RootError(f"{path}: shipped={data['shipped']!r}: expected true or false")
    hide = data.get("hide", [])
    if not isinstance(hide, list) or not all(isinstance(n, str) for n in hide):
        raise RootError(f"{path}: hide={hide!r}: expected a list of plugin names")
    return data


def plugin_folders(kind: str) -> list[tuple[Path, str]]:
    """(folder, "root" or "shipped") of ``kind`` (methods, datasets, protocols) in the order they are read: the
    root's, then the shipped benchmark's unless the root is that checkout or its settings turn it off."""
    here = root()
    folders = [(here / kind, "root")]
    if here != PACKAGE_CHECKOUT and is_root(PACKAGE_CHECKOUT) and settings().get("shipped", True):
        folders.append((PACKAGE_CHECKOUT / kind, "shipped"))
    return folders


def hidden_names() -> set[str]:
    """The shipped plugins (methods, data sets, protocols) the root hides by name."""
    return set(settings().get("hide", []))


def root() -> Path:
    """This process's benchmark root (absolute), chosen by the rules in the module docstring."""
    if _given is not None:
        return _given
    if os.environ.get(ENV):
        return _checked(os.environ[ENV], f"${ENV}")
    cwd = Path.cwd()
    if is_root(cwd):
        return cwd.resolve()
    if is_root(PACKAGE_CHECKOUT):
        return PACKAGE_CHECKOUT
    raise RootError(f"{cwd} is not a benchmark root (it holds neither methods/ nor protocols/), and neither is "
                    f"{PACKAGE_CHECKOUT}; run from one or pass --root DIR")
