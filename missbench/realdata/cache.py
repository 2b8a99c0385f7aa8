"""The preprocessing cache's storage: one folder per recipe, one atomically written folder per case.

Layout: ``<base>/<dataset>_<recipe>_<hash of the recipe parameters>/`` holding ``recipe.json`` and one
folder per case with ``image.npy`` (float32), ``target.npy`` (uint8; absent for unlabelled cases)
and ``meta.json`` (crop box, original shape, affine, header, sources). A case folder is written
under a temporary name and renamed, so it is either complete or absent. Training reads the arrays
memory-mapped. missbench/prepare.py fills the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from missbench.experiment.spec import canonical

META = "meta.json"


def cache_folder(base: Path, dataset: str, recipe: dict[str, Any]) -> Path:
    """The recipe's folder: ``<base>/<dataset>_<recipe name>_<hash of every recipe parameter>``."""
    digest = hashlib.sha256(canonical(recipe).encode()).hexdigest()[:10]
    return base / f"{dataset}_{recipe['name']}_{digest}"


def save_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temporary name beside ``path`` (same suffixes) and rename it over ``path``."""
    tmp = path.with_name(f".tmp{os.getpid()}-{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def has_case(folder: Path, case_id: str, sources: dict[str, Any] | None = None) -> bool:
    """Whether the case is cached (and, given ``sources``, made from files of the same names and sizes)."""
    meta = folder / case_id / META
    if not meta.exists():
        return False
    return sources is None or json.loads(meta.read_text()).get("sources") == sources


def read_case(folder: Path, case_id: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The cached arrays of a case, memory-mapped copy-on-write, and its meta data."""
    path = folder / case_id
    if not (path / META).exists():
        raise FileNotFoundError(f"case {case_id} is not in the cache {folder}; run `python bench.py prepare` first")
    arrays = {}
    for f in sorted(path.glob("*.npy")):
        try:
            arrays[f.stem] = np.load(f, mmap_mode="c")
        except (ValueError, OSError) as e:
            raise ValueError(f"case {case_id}: corrupt cache file {f} ({e}); delete {path} and rerun prepare") from None
    return arrays, json.loads((path / META).read_text())


def write_case(folder: Path, case_id: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Store one case atomically: write a temporary folder, then rename it into place."""
    tmp = folder / f".{case_id}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr)
        (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        final = folder / case_id
        if final.exists():  # a stale entry (other source files): swap it out only now that the new one is complete
            old = folder / f".{case_id}.old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_dead_temporaries(folder: Path) -> None:
    """Temporary case folders left by killed `prepare` processes (their pid no longer runs)."""
    for tmp in folder.glob(".*.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass
