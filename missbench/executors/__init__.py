"""Executors: where `missbench.engine.run.run` is called, never what it does (DESIGN invariant 4).

``inline`` calls it in this process (progress bars); ``local`` in submitit subprocesses, ``--jobs``
at a time, one GPU each when there are GPUs; ``slurm`` as submitit array jobs, one array per
resource profile, split under the cluster's MaxArraySize. All three run the same ``RunTask`` and
skip the same runs: done ones (unless ``force``), queued or running ones, and failed ones (FAILED
in the run folder) unless ``rerun_failed`` or the failure cannot recur under this command (it came
from the execution environment, or ran with other execution options). submitit is imported only by
the local and SLURM executors.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from missbench.experiment.resources import DEFAULTS
from missbench.experiment.spec import RunSpec
from missbench.store.run_folder import RunFolder
from missbench.store.sweep import RunState, SweepError, states

if TYPE_CHECKING:  # torch: imported by the executors that run, not by `bench.py --help`
    from missbench.core.execution import Execution

EXECUTORS = ("inline", "local", "slurm")


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


def plan(specs: list[RunSpec], sweep: Path, opts: Options, exe: Execution | None = None) -> tuple[list[RunSpec], dict[str, RunState]]:
    """(specs to run, {run id: state} of the ones left alone, with the reason in the state). A failed run is
    run again without ``rerun_failed`` when its failure says nothing about the experiment: FAILED marks it
    environmental (disk, memory, device), or records other execution options than ``exe`` (a typo in
    ``--device`` must not block the corrected command)."""
    try:
        known = {r.run_id: r for r in states(sweep)} if sweep.is_dir() else {}
    except SweepError:
        known = {}
    todo, left = [], {}
    for spec in specs:
        state = known.get(spec.run_id)
        kind = state.state if state else None
        if kind in ("pending", "running", "unknown") or kind == "done" and not opts.force \
                or kind == "failed" and not (opts.force or opts.rerun_failed or _retry(RunFolder(sweep / spec.run_id), exe)):
            left[spec.run_id] = state
        else:
            todo.append(spec)
    return todo, left


def _retry(folder: RunFolder, exe: Execution | None) -> bool:
    """Whether a failed run's failure came from its environment or from other execution options than ``exe``."""
    failure = folder.failure()
    recorded = failure.get("execution") or {}
    return bool(failure.get("environmental")) or bool(recorded) and exe is not None and not exe.matches(recorded)


def execute(todo: list[RunSpec], sweep: Path, exe: Execution, opts: Options, say: Callable[[str], None] = print) -> bool:
    """Run or submit ``todo`` with ``opts.executor``; True when they have all ended (not just been queued)."""
    if opts.executor not in EXECUTORS:
        raise ValueError(f"unknown executor {opts.executor!r}; valid: {', '.join(EXECUTORS)}")
    if not todo:
        return True
    if opts.executor == "inline":
        from missbench.executors.inline import run_inline

        run_inline(todo, sweep, exe, opts, say)
        return True
    exe = replace(exe, progress=False)  # no progress bars in job logs
    if opts.executor == "local":
        from missbench.executors.local import run_local

        run_local(todo, sweep, exe, opts, say)
        return True
    from missbench.executors.slurm import submit_slurm, wait

    submit_slurm(todo, sweep, exe, opts, say)
    if opts.wait:
        wait(sweep, [s.run_id for s in todo])
    return opts.wait
