"""Executors: where ``missbench.engine.run.run`` is called, never what it does (DESIGN invariant 4).

``inline`` calls it in this process (progress bars); ``local`` in submitit subprocesses, ``--jobs``
at a time, one GPU each when there are GPUs; ``slurm`` as submitit array jobs, one array per
resource profile, split under the cluster's MaxArraySize. All three run the same ``RunTask`` and
skip the same runs: done ones (unless ``force``), queued or running ones, and failed ones (FAILED
in the run folder) unless ``rerun_failed``.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from missbench.experiment import registry
from missbench.experiment.resources import DEFAULTS, slurm_parameters, time_minutes
from missbench.executors.task import RunTask
from missbench.experiment.spec import Execution, RunSpec, canonical
from missbench.store.sweep import SUBMITIT, RunState, SweepError, record_jobs, states

EXECUTORS = ("inline", "local", "slurm")
#: Array size when ``scontrol`` cannot tell the cluster's MaxArraySize.
DEFAULT_MAX_ARRAY_SIZE = 1000


class SubmissionError(RuntimeError):
    """The scheduler refused a submission."""


@dataclass
class Options:
    """How to execute: executor, concurrency, per-method resources and what to rerun."""

    executor: str = "inline"
    jobs: int = 1
    array_parallelism: int = 256
    max_array_size: int | None = None
    wait: bool = False
    force: bool = False
    rerun_failed: bool = False
    threads: int | None = None
    #: Resolved resources of a method's runs (missbench.experiment.resources.resolve).
    resources: Callable[[str], dict[str, Any]] = field(default=lambda method: dict(DEFAULTS))


def plan(specs: list[RunSpec], sweep: Path, opts: Options) -> tuple[list[RunSpec], dict[str, RunState]]:
    """(specs to run, {run id: state} of the ones left alone, with the reason in the state)."""
    try:
        known = {r.run_id: r for r in states(sweep)} if sweep.is_dir() else {}
    except SweepError:
        known = {}
    todo, left = [], {}
    for spec in specs:
        state = known.get(spec.run_id)
        kind = state.state if state else None
        if kind in ("pending", "running", "unknown") or kind == "done" and not opts.force \
                or kind == "failed" and not (opts.force or opts.rerun_failed):
            left[spec.run_id] = state
        else:
            todo.append(spec)
    return todo, left


@contextlib.contextmanager
def _importable() -> Iterator[None]:
    """Jobs import ``missbench`` from this checkout even when it is not pip-installed (they inherit
    the submitting environment: subprocess env for local, sbatch's --export=ALL default for SLURM)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(registry.ROOT), old) if p)
    try:
        yield
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


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


def run_local(todo: list[RunSpec], sweep: Path, exe: Execution, opts: Options, say: Callable[[str], None]) -> None:
    """Submitit subprocesses, ``opts.jobs`` at a time; slot k gets GPU k mod the GPU count."""
    import submitit
    import torch

    gpus = torch.cuda.device_count()
    executor = submitit.LocalExecutor(folder=sweep / SUBMITIT)
    threads = opts.threads or max(1, (os.cpu_count() or 1) // opts.jobs)
    task = RunTask(sweep, exe, opts.force, threads)
    queue, running, finished = list(todo), {}, 0
    with _importable():
        while queue or running:
            for slot in [k for k in range(opts.jobs) if k not in running][: len(queue)]:
                spec = queue.pop(0)
                res = opts.resources(spec.method)
                executor.update_parameters(timeout_min=time_minutes(res["time"]), gpus_per_node=1 if gpus else 0,
                                           visible_gpus=(slot % gpus,) if gpus else ())
                running[slot] = (spec, executor.submit(task, spec))
                record_jobs(sweep, "local", [(spec, running[slot][1].job_id)])
            for slot, (spec, job) in list(running.items()):
                if job.done():
                    finished += 1
                    error = job.exception()
                    say(f"[{finished}/{len(todo)}] {spec.run_id}: " + (f"FAILED ({type(error).__name__})" if error else "done"))
                    del running[slot]
            time.sleep(0.2)


def submit_slurm(todo: list[RunSpec], sweep: Path, exe: Execution, opts: Options, say: Callable[[str], None]) -> None:
    """One array job per resource profile (and per MaxArraySize chunk); returns once submitted."""
    import submitit
    from submitit.core.utils import FailedJobError

    groups: dict[str, tuple[dict[str, Any], list[RunSpec]]] = {}
    for spec in todo:
        res = opts.resources(spec.method)
        groups.setdefault(canonical(res), (res, []))[1].append(spec)
    size = max_array_size(opts.max_array_size)
    with _importable():
        for res, specs in groups.values():
            executor = submitit.AutoExecutor(folder=sweep / SUBMITIT, cluster="slurm", slurm_max_num_timeout=res["requeues"])
            executor.update_parameters(name=f"missbench_{sweep.name}", slurm_array_parallelism=opts.array_parallelism,
                                       **slurm_parameters(res))
            task = RunTask(sweep, exe, opts.force, opts.threads or res["cpus"])
            for start in range(0, len(specs), size):
                chunk = specs[start:start + size]
                try:
                    jobs = executor.map_array(task, chunk)
                except FailedJobError as e:  # sbatch refused it: a bad partition, account, time...
                    raise SubmissionError(f"sbatch refused the array of {len(chunk)} runs: {' '.join(str(e).split())}") from None
                record_jobs(sweep, "slurm", zip(chunk, [j.job_id for j in jobs]))
                say(f"submitted {len(chunk)} runs as SLURM array job {jobs[0].job_id.split('_')[0]} "
                    f"({res['time']}, {res['cpus']} CPUs, {res['gpus']} GPUs)")


def wait(sweep: Path, run_ids: list[str], poll_s: float = 2.0) -> None:
    """Block until none of ``run_ids`` is pending or running."""
    while any(r.state in ("pending", "running", "unknown") for r in states(sweep) if r.run_id in run_ids):
        time.sleep(poll_s)


def execute(todo: list[RunSpec], sweep: Path, exe: Execution, opts: Options, say: Callable[[str], None] = print) -> bool:
    """Run or submit ``todo`` with ``opts.executor``; True when they have all ended (not just been queued)."""
    if opts.executor not in EXECUTORS:
        raise ValueError(f"unknown executor {opts.executor!r}; valid: {', '.join(EXECUTORS)}")
    if not todo:
        return True
    if opts.executor == "inline":
        run_inline(todo, sweep, exe, opts, say)
        return True
    exe = replace(exe, progress=False)  # no progress bars in job logs
    if opts.executor == "local":
        run_local(todo, sweep, exe, opts, say)
        return True
    submit_slurm(todo, sweep, exe, opts, say)
    if opts.wait:
        wait(sweep, [s.run_id for s in todo])
    return opts.wait
