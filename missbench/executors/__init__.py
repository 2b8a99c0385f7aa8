"""Executors: where `missbench.engine.run.run` is called, never what it does (DESIGN invariant 4).

``inline`` calls it in this process (progress bars); ``local`` in submitit subprocesses, ``--jobs``
at a time, one GPU each when there are GPUs; ``slurm`` as submitit array jobs, one array per
resource profile, split under the cluster's MaxArraySize. All three run the same ``RunTask`` on the
same `plan`: a job per model with the scores still to make (a finished model is scored, not trained
again); done ones are skipped (unless ``force``), queued or running ones left alone, and failed ones
(a FAILED of the model or of a score) too, unless ``rerun_failed`` or the failure cannot recur under
this command (it came from the execution environment, or ran with other execution options).
submitit is imported only by the local and SLURM executors.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from missbench.experiment.resources import DEFAULTS
from missbench.experiment.spec import Job, RunSpec, jobs
from missbench.store.run_folder import Artefact, ModelFolder
from missbench.store.sweep import RunState, SweepError, locked, states
from missbench.store.state import LIVE, State

if TYPE_CHECKING:  # torch: imported by the executors that run, not by `bench.py --help`
    from missbench.core.execution import Execution

EXECUTORS = ("inline", "local", "slurm")


class SubmissionError(RuntimeError):
    """The scheduler refused a submission."""


@dataclass(kw_only=True)
class Options:
    """How to execute: executor, concurrency, per-method resources and what to rerun. Keyword-only: a field added
    here never shifts a caller's values into its neighbour (as ``train`` once took the resources)."""

    executor: str = "inline"
    jobs: int = 1
    array_parallelism: int = 256
    max_array_size: int | None = None
    wait: bool = False
    force: bool = False
    rerun_failed: bool = False
    threads: int | None = None
    #: False: score finished models only (``bench.py evaluate``); ``force`` then redoes scores, never training.
    train: bool = True
    #: Resolved resources of a method's runs (missbench.experiment.resources.resolve).
    resources: Callable[[str], dict[str, Any]] = field(default=lambda method: dict(DEFAULTS))


def job_threads(opts: Options, method: str) -> int:
    """The CPU threads a job of ``method`` runs with under ``opts``: ``--threads``, else the executor's share of the
    cores (inline: every core the process may use; local: those divided by ``--jobs``; SLURM: the job's cpus)."""
    if opts.threads:
        return opts.threads
    if opts.executor == "slurm":
        return int(opts.resources(method)["cpus"])
    from missbench.core.execution import available_cores

    return max(1, available_cores() // (opts.jobs if opts.executor == "local" else 1))


def plan(specs: list[RunSpec], sweep: Path, opts: Options, exe: Execution | None = None) -> tuple[list[Job], dict[str, RunState]]:
    """(jobs to run, {model id: state} of the models left alone, with the reason in the state). A job holds its
    model and the scores still to make: a finished model's job only scores. A failure (the model's, or a
    score's) is run again without ``rerun_failed`` when it says nothing about the experiment: FAILED marks it
    environmental (disk, memory, device), or records other execution options than ``exe`` (a typo in
    ``--device`` must not block the corrected command)."""
    try:
        known = {r.model_id: r for r in states(sweep)} if sweep.is_dir() else {}
    except SweepError:
        known = {}
    todo, left = [], {}
    for job in jobs(specs):
        state = known.get(job.model_id)
        kind = state.state if state else None
        folder = ModelFolder(sweep / job.model_id)
        if kind in LIVE or kind is State.DONE and not opts.force and _all_done(folder, job):
            left[job.model_id] = state
            continue
        retry = opts.force or opts.rerun_failed
        if folder.state() is State.FAILED and not (retry or _retry(folder, exe)):
            left[job.model_id] = RunState(job.model_id, State.FAILED, state.job_id if state else None, folder.log_path,
                                          state.detail if state else "")
            continue
        model_done = folder.is_done()  # a model to train (or redo: corrupt) takes its job's every score; run() skips the done ones
        runs = [r for r in job.runs if opts.force or not model_done or _wanted(folder.score(r.score.score_id), retry, exe)]
        if not runs:
            left[job.model_id] = state or RunState(job.model_id, State.DONE, None, folder.log_path)
            continue
        todo.append(Job(tuple(runs)))
    return todo, left


def _all_done(folder: ModelFolder, job: Job) -> bool:
    return all(folder.score(r.score.score_id).is_done() for r in job.runs)


def _wanted(score: Artefact, retry: bool, exe: Execution | None) -> bool:
    """Whether a score is still to make: not done, and not failed unless its failure may not recur."""
    state = score.state()
    return state is not State.DONE and (state is not State.FAILED or retry or _retry(score, exe))


def _retry(folder: Artefact, exe: Execution | None) -> bool:
    """Whether a failure came from its environment or from other execution options than ``exe``."""
    failure = folder.failure()
    recorded = failure.get("execution") or {}
    return bool(failure.get("environmental")) or bool(recorded) and exe is not None and not exe.matches(recorded)


@dataclass
class Outcome:
    """What `execute` did: the jobs run or submitted, the models left alone (with their states) and whether every
    job has ended (not just been queued)."""

    todo: list[Job]
    left: dict[str, RunState]
    ended: bool


def announce(todo: list[Job], left: dict[str, RunState], sweep: Path, opts: Options, say: Callable[[str], None]) -> None:
    """A line per model the plan leaves alone (with why) and per finished model it only scores."""
    from missbench.store.run_folder import ModelFolder

    for job in todo:
        if not opts.force and ModelFolder(sweep / job.model_id).is_done():
            say(f"{job.model_id}: trained before; {len(job.runs)} score{'s' if len(job.runs) != 1 else ''} to make")
    for model_id, state in left.items():
        say(f"{model_id}: " + {State.DONE: "skipped, done before", State.FAILED: "failed before, not rerun (--rerun-failed)"}.get(
            state.state, f"already {state.state} " + (f"as job {state.job_id}" if state.job_id else f"elsewhere ({state.detail})")))


def execute(specs: list[RunSpec], sweep: Path, exe: Execution, opts: Options, say: Callable[[str], None] = print) -> Outcome:
    """Plan ``specs`` (`plan`: a job per model with what is still to do), say what is left alone, and run or submit
    the jobs with ``opts.executor``. A SLURM submission plans and submits under the sweep's lock, once, so two
    submissions at once never queue one model twice."""
    if opts.executor not in EXECUTORS:
        raise ValueError(f"unknown executor {opts.executor!r}; valid: {', '.join(EXECUTORS)}")
    if opts.executor == "slurm":
        from missbench.executors.slurm import submit_slurm, wait

        with locked(sweep):
            todo, left = plan(specs, sweep, opts, exe)
            announce(todo, left, sweep, opts, say)
            submit_slurm(todo, sweep, replace(exe, progress=False), opts, say)
        if todo and opts.wait:
            wait(sweep, [job.model_id for job in todo])
        return Outcome(todo, left, opts.wait or not todo)
    todo, left = plan(specs, sweep, opts, exe)
    announce(todo, left, sweep, opts, say)
    if todo and opts.executor == "inline":
        from missbench.executors.inline import run_inline

        run_inline(todo, sweep, exe, opts, say)
    elif todo:
        from missbench.executors.local import run_local

        run_local(todo, sweep, replace(exe, progress=False), opts, say)  # no progress bars in job logs
    return Outcome(todo, left, True)
