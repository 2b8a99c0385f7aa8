"""The inline executor: each run in this process, in turn; a failure is recorded and the next run starts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from missbench.core.execution import Execution
from missbench.executors import Options
from missbench.executors.task import RunTask
from missbench.experiment.spec import RunSpec
from missbench.store.sweep import record_jobs


def run_inline(todo: list[RunSpec], sweep: Path, exe: Execution, opts: Options, say: Callable[[str], None]) -> None:
    """Each run in this process; a failure is recorded (FAILED) and the next run starts."""
    task = RunTask(sweep, exe, opts.force)
    record_jobs(sweep, "inline", [(s, None) for s in todo])
    for i, spec in enumerate(todo, 1):
        t0 = time.perf_counter()
        try:
            state = task(spec)
        except Exception as e:  # recorded in the run's FAILED by RunTask; the sweep goes on
            state = f"FAILED, {type(e).__name__}: {e}"
        say(f"[{i}/{len(todo)}] {spec.run_id}: {state} ({time.perf_counter() - t0:.1f} s)")
