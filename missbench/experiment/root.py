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
