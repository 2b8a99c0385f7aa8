"""The inline executor: each job in this process, in turn; a failure is recorded and the next job starts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from missbench.core.execution import Execution
from missbench.executors import Options
from missbench.executors.task import RunTask
from missbench.experiment.spec import Job
from missbench.store.sweep import record_jobs


def run_inline(todo: list[Job], sweep: Path, exe: Execution, opts: Options, say: Callable[[str], None]) -> None:
    """Each job in this process; a failure is recorded (FAILED) and the next job starts."""
    task = RunTask(sweep, exe, opts.force, train=opts.train)
    record_jobs(sweep, "inline", [(job, None, None) for job in todo])
    for i, job in enumerate(todo, 1):
        t0 = time.perf_counter()
        try:
            state = task(job)
        except Exception as e:  # recorded in a FAILED by the run skeleton; the sweep goes on
            state = f"FAILED, {type(e).__name__}: {e}"
        say(f"[{i}/{len(todo)}] {job.model_id}: {state} ({time.perf_counter() - t0:.1f} s)")
