"""The preprocessing cache's storage: one folder per recipe, one atomically written folder per case.

Layout: ``<base>/<dataset>_<recipe>_<hash of the recipe parameters>/`` holding ``recipe.json`` (the
recipe and its SHA-256) and one folder per case with ``image.npy`` (float32), ``target.npy`` (uint8;
absent for unlabelled cases) and ``meta.json`` (crop box, original shape, affine, header, the recipe's
SHA-256, each source file's name, size, modification time and SHA-256, each array's SHA-256). A case
folder is written under a temporary name and renamed, so it is either complete or absent. Training
reads the arrays memory-mapped. missbench/realdata/prepare.py fills the cache.

Freshness: a case is current when its recipe hash is the recipe's and its source files hold what was
hashed. Hashing every NIfTI file on every prepare and run would cost a full read of the data set, so
the check is keyed on (size, mtime_ns): a file whose name, size and modification time are as recorded
counts as unchanged; any other is rehashed (a touched but identical file still counts as current, and
its new time is recorded so that it is rehashed once, not by every run; an edit at equal size has a
new mtime and is caught). ``verify`` (``bench.py prepare --verify``) rehashes
every source file and every cached array, whatever their times. Caches written before content hashes
were recorded (sources as [name, size]) are not current: prepare redoes their cases once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from missbench.experiment.spec import canonical
from missbench.store.run_folder import file_sha256, write_atomic

META, RECIPE = "meta.json", "recipe.json"


class CorruptCache(OSError):
    """A cache file that does not read: the machine's (files), not the experiment's, so a run that failed on it
    runs again once `bench.py prepare --verify` repaired the cache."""


class CacheError(ValueError):
    """A cache folder that holds another recipe than its name says; the message names the folder."""


def recipe_digest(recipe: dict[str, Any]) -> str:
    """The SHA-256 of a recipe's canonical JSON: its content hash."""
    return hashlib.sha256(canonical(recipe).encode()).hexdigest()


def cache_folder(base: Path, dataset: str, recipe: dict[str, Any]) -> Path:
    """The recipe's folder: ``<base>/<dataset>_<recipe name>_<hash of every recipe parameter>``."""
    return base / f"{dataset}_{recipe['name']}_{recipe_digest(recipe)[:10]}"


def write_recipe(folder: Path, dataset: str, recipe: dict[str, Any]) -> None:
    """Write ``recipe.json`` (the recipe and its SHA-256), or refuse a folder whose recipe.json holds another."""
    path = folder / RECIPE
    if path.exists():
        try:
            held = json.loads(path.read_text()).get("sha256")
        except ValueError:
            held = None
        if held == recipe_digest(recipe):
            return
        if held is not None:
            raise CacheError(f"{path} holds another recipe (sha256 {held[:12]}...) than {recipe}; move the folder away")
    write_atomic(path, (json.dumps({"dataset": dataset, "recipe": recipe, "sha256": recipe_digest(recipe)},
                                   indent=1, sort_keys=True) + "\n").encode())


def source_record(files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """What a case records of each source file: name, size, modification time (ns) and SHA-256."""
    out = {}
    for key, path in files.items():
        st = path.stat()
        out[key] = {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(path)}
    return out


def current_sources(recorded: Any, files: dict[str, Path], verify: bool = False) -> dict[str, dict[str, Any]] | None:
    """``recorded`` with each file's modification time as it is now, if ``files`` hold what it says; else None.
    A file of the recorded name, size and mtime counts as unchanged unless ``verify``; any other is rehashed
    and compared (module docstring)."""
    if not isinstance(recorded, dict) or set(recorded) != set(files):
        return None
    now = {}
    for key, path in files.items():
        r = recorded[key]
        if not isinstance(r, dict) or r.get("name") != path.name:
            return None
        st = path.stat()
        if r.get("size") != st.st_size:
            return None
        if (verify or r.get("mtime_ns") != st.st_mtime_ns) and file_sha256(path) != r.get("sha256"):
            return None
        now[key] = {**r, "mtime_ns": st.st_mtime_ns}
    return now


def has_case(folder: Path, case_id: str, files: dict[str, Path], recipe: dict[str, Any], verify: bool = False) -> bool:
    """Whether the case is cached from this recipe and from what ``files`` hold now; ``verify`` also rehashes
    every source file and every cached array (module docstring)."""
    path = folder / case_id
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError):
        return False
    sources = current_sources(meta.get("sources"), files, verify) if meta.get("recipe_sha256") == recipe_digest(recipe) else None
    if sources is None:
        return False
    arrays = meta.get("arrays", {})
    if verify and (set(arrays) != {p.stem for p in path.glob("*.npy")}
                   or any(file_sha256(path / f"{name}.npy") != digest for name, digest in arrays.items())):
        return False
    if sources != meta["sources"]:  # touched, same content: record the new times, so the next check is cheap again
        try:
            write_atomic(path / META, (json.dumps({**meta, "sources": sources}, indent=1, sort_keys=True) + "\n").encode())
        except OSError:
            pass  # a read-only cache stays current; it is only rehashed again next time
    return True


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
            raise CorruptCache(f"case {case_id}: corrupt cache file {f} ({e}); run `python bench.py prepare --verify` "
                               f"to rebuild it") from None
    return arrays, json.loads((path / META).read_text())


def write_case(folder: Path, case_id: str, arrays: dict[str, np.ndarray], meta: dict[str, Any],
               sources: dict[str, Path], recipe: dict[str, Any]) -> None:
    """Store one case atomically: write a temporary folder, then rename it into place. meta.json also records
    what `has_case` checks: the recipe's SHA-256, each source file (`source_record`) and each array file's SHA-256."""
    tmp = folder / f".{case_id}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr)
        meta = {**meta, "recipe_sha256": recipe_digest(recipe), "sources": source_record(sources),
                "arrays": {name: file_sha256(tmp / f"{name}.npy") for name in arrays}}
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
