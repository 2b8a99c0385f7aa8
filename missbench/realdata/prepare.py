"""``bench.py prepare``: run a data set's preprocessing recipe once per case into the cache (missbench/realdata/cache.py).

Resumable: finished cases are skipped (a case folder is complete or absent), unless their recipe or
a source file's content changed since (``verify``: every source file and cached array rehashed, not
only those whose size or modification time changed). Every case to do is
checked first (headers: readable, 3-D, same shape and affine in all its files), before anything
is written; then cases are processed in parallel (``--jobs`` worker processes). A case that fails
its content checks (labels, non-finite voxels, unreadable voxels) is not written, the others are,
and the command lists every failure and exits with status 2.

A data set takes part through the prepare hooks of `missbench.core.dataset.Dataset` (``for_prepare``,
``prepare_ids``, ``is_prepared``, ``check_headers``, ``prepare_case``, ``cache_folder``, ``recipe``).
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any

from tqdm import tqdm

from missbench.realdata import cache


class PrepareError(ValueError):
    """One or more cases failed their checks; the message lists each case and file."""


def _failures(errors: dict[str, str], what: str) -> PrepareError:
    return PrepareError(f"{len(errors)} case(s) failed {what}:\n" + "\n".join(f"  {msg}" for msg in errors.values()))


def prepare(dataset: Any, jobs: int = 1, progress: bool = True, force: bool = False, verify: bool = False) -> dict[str, Any]:
    """Fill ``dataset``'s cache; returns {folder, prepared, skipped, seconds}. Raises `PrepareError`
    naming every failed case: after the header checks (nothing written) or after processing."""
    t0 = time.perf_counter()
    ids = dataset.prepare_ids()
    todo = [c for c in tqdm(ids, desc="verify" if verify else "check cache", disable=not progress, leave=False)
            if force or not dataset.is_prepared(c, verify)]
    errors: dict[str, str] = {}
    for case_id in tqdm(todo, desc="check headers", disable=not progress, leave=False):
        try:
            dataset.check_headers(case_id)
        except ValueError as e:
            errors[case_id] = str(e)
    if errors:
        raise _failures(errors, "the header checks; nothing was written")
    folder = dataset.cache_folder
    folder.mkdir(parents=True, exist_ok=True)
    cache.remove_dead_temporaries(folder)
    cache.write_recipe(folder, dataset.name, dataset.recipe)
    bar = tqdm(total=len(todo), desc=f"prepare {dataset.name}", unit="case", disable=not progress)
    if jobs > 1 and len(todo) > 1 and "fork" in multiprocessing.get_all_start_methods():
        # fork: the workers inherit the plugin module that missbench/experiment/registry.py loaded by path.
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            futures: dict[Future, str] = {pool.submit(dataset.prepare_case, c): c for c in todo}
            for fut in as_completed(futures):
                err = fut.exception()
                if err is not None:
                    errors[futures[fut]] = str(err) if isinstance(err, ValueError) else f"case {futures[fut]}: {type(err).__name__}: {err}"
                bar.update(1)
    else:
        for case_id in todo:
            try:
                dataset.prepare_case(case_id)
            except ValueError as e:
                errors[case_id] = str(e)
            bar.update(1)
    bar.close()
    if errors:
        raise _failures(errors, f"preprocessing; the other {len(todo) - len(errors)} were cached in {folder}")
    return {"folder": folder, "prepared": len(todo), "skipped": len(ids) - len(todo), "seconds": time.perf_counter() - t0}
