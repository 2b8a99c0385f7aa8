"""The SLURM executor: submitit array jobs, one array per resource profile, split under MaxArraySize."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from missbench.core.execution import Execution
from missbench.executors import Options, SubmissionError
from missbench.executors.environment import importable
from missbench.executors.task import RunTask
from missbench.experiment.resources import slurm_parameters
from missbench.experiment.spec import Job, canonical
from missbench.store.state import LIVE
from missbench.store.sweep import SUBMITIT, locked, record_jobs, states

#: Array size when ``scontrol`` cannot tell the cluster's MaxArraySize.
DEFAULT_MAX_ARRAY_SIZE = 1000


def max_array_size(given: int | None) -> int:
    """``given``, else the cluster's MaxArraySize (``scontrol show config``), else 1000."""
    if given:
        return given
    try:
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return DEFAULT_MAX_ARRAY_SIZE
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", config, re.M)
    return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


def submit_slurm(todo: list[Job], sweep: Path, exe: Execution, opts: Options, say: Callable[[str], None]) -> None:
    """One array job per resource profile (and per MaxArraySize chunk); returns once submitted. The caller planned
    ``todo`` under the sweep's lock and holds it (`missbench.executors.execute`)."""
    import submitit
    from submitit.core.utils import FailedJobError

    if not todo:
        return
    size = max_array_size(opts.max_array_size)
    with importable(), locked(sweep):
        groups: dict[str, tuple[dict[str, Any], list[Job]]] = {}
        for job in todo:
            res = opts.resources(job.model.method)
            groups.setdefault(canonical(res), (res, []))[1].append(job)
        for res, grouped in groups.values():
            executor = submitit.AutoExecutor(folder=sweep / SUBMITIT, cluster="slurm", slurm_max_num_timeout=res["requeues"])
            executor.update_parameters(name=f"missbench_{sweep.name}", slurm_array_parallelism=opts.array_parallelism,
                                       **slurm_parameters(res))
            task = RunTask(sweep, exe, opts.force, opts.threads or res["cpus"], opts.train)
            for start in range(0, len(grouped), size):
                chunk = grouped[start:start + size]
                try:
                    submitted = executor.map_array(task, chunk)
                except FailedJobError as e:  # sbatch refused it: a bad partition, account, time...
                    raise SubmissionError(f"sbatch refused the array of {len(chunk)} models: {' '.join(str(e).split())}") from None
                record_jobs(sweep, "slurm", [(job, j.job_id, j.paths.stderr) for job, j in zip(chunk, submitted)])
                say(f"submitted {len(chunk)} models as SLURM array job {submitted[0].job_id.split('_')[0]} "
                    f"({res['time']}, {res['cpus']} CPUs, {res['gpus']} GPUs)")


def wait(sweep: Path, model_ids: list[str], poll_s: float = 2.0) -> None:
    """Block until none of ``model_ids`` is pending or running."""
    while any(r.state in LIVE for r in states(sweep) if r.model_id in model_ids):
        time.sleep(poll_s)
