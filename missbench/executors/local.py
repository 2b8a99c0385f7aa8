"""The local executor: submitit subprocesses, ``--jobs`` at a time, one GPU each when there are GPUs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from missbench.core.execution import Execution, available_cores
from missbench.executors import Options
from missbench.executors.environment import importable
from missbench.executors.task import RunTask
from missbench.experiment.resources import time_minutes
from missbench.experiment.spec import Job
from missbench.store.sweep import SUBMITIT, record_jobs


def run_local(todo: list[Job], sweep: Path, exe: Execution, opts: Options, say: Callable[[str], None]) -> None:
    """Submitit subprocesses, ``opts.jobs`` at a time; slot k gets GPU k mod the GPU count."""
    import submitit
    import torch

    gpus = torch.cuda.device_count()
    executor = submitit.LocalExecutor(folder=sweep / SUBMITIT)
    threads = opts.threads or max(1, available_cores() // opts.jobs)
    task = RunTask(sweep, exe, opts.force, threads, opts.train)
    queue, running, finished = list(todo), {}, 0
    with importable():
        while queue or running:
            for slot in [k for k in range(opts.jobs) if k not in running][: len(queue)]:
                job = queue.pop(0)
                res = opts.resources(job.model.method)
                executor.update_parameters(timeout_min=time_minutes(res["time"]), gpus_per_node=1 if gpus else 0,
                                           visible_gpus=(slot % gpus,) if gpus else ())
                running[slot] = (job, executor.submit(task, job))
                record_jobs(sweep, "local", [(job, running[slot][1].job_id, running[slot][1].paths.stderr)])
            for slot, (job, submitted) in list(running.items()):
                if submitted.done():
                    finished += 1
                    error = submitted.exception()
                    say(f"[{finished}/{len(todo)}] {job.model_id}: " + (f"FAILED ({type(error).__name__})" if error else submitted.result()))
                    del running[slot]
            time.sleep(0.2)
