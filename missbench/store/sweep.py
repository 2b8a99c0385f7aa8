"""A sweep folder's bookkeeping: which job runs which model and its scores (``jobs.json``), each model's
state with its asked scores, collect, cancel.

Everything here works from a new process: states come from the model and score folders (DONE, FAILED,
the claim of the process running a model) and, for models whose job may still be alive, from ``squeue``
(SLURM) or the process table (local). sacct is never needed, so a cluster without accounting works too.

Concurrency: jobs.json is updated under an exclusive lock (``jobs.json.lock`` beside it) and replaced
atomically, so processes recording at once keep every entry and readers never see half a file.
Processes are recorded with their start time (missbench.store.process): a PID that a new process has
reused is never taken for the recorded one, so `cancel` signals only the processes this sweep started.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from missbench.experiment.spec import Job
from missbench.store import process
from missbench.store.run_folder import FAILED, REDO, Artefact, ModelFolder, ScoreFolder, write_json
from missbench.store.state import State

log = logging.getLogger("missbench")
JOBS = "jobs.json"
JOBS_LOCK = "jobs.json.lock"
SUBMITIT = ".submitit"
COLLECTED = "collected.parquet"
#: squeue states of a job that is still coming or going; anything else has ended.
_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESV_DEL_HOLD", "SUSPENDED", "RESIZING"}
_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}


class SweepError(ValueError):
    """A sweep folder that cannot be read (no such folder, no runs, a corrupt jobs.json)."""


@dataclass(frozen=True)
class RunState:
    """One model's state with the scores asked of it: pending, running, done (the model and every asked score),
    corrupt (DONE, but results were damaged: a rerun redoes them), failed (a FAILED holds the error: the
    model's or a score's) or stopped (no result and no live job: killed, cancelled or interrupted, or
    scores still to make; a rerun resumes it)."""

    model_id: str
    state: State
    job_id: str | None
    log: Path
    detail: str = ""


def read_jobs(sweep: Path) -> dict[str, Any]:
    """``jobs.json`` of ``sweep`` ({"runs": {}} when there is none)."""
    path = sweep / JOBS
    if not path.exists():
        return {"runs": {}}
    try:
        data = json.loads(path.read_text())
        assert isinstance(data, dict) and isinstance(data.get("runs"), dict)
        assert all(isinstance(entry, dict) for entry in data["runs"].values())
    except (ValueError, AssertionError):
        raise SweepError(f"{path}: not a MissBench jobs file (expected {{\"runs\": {{model_id: job}}}})") from None
    return data


#: Sweep locks this process holds: folder -> (open lock file, depth), so `locked` is re-entrant.
_HELD: dict[Path, tuple[Any, int]] = {}


@contextlib.contextmanager
def locked(sweep: Path) -> Iterator[None]:
    """Hold the sweep's bookkeeping lock (flock on jobs.json.lock; waits for another holder). Re-entrant
    within a process, so a submission can plan and record under one hold."""
    key = sweep.resolve()
    if key in _HELD:
        f, depth = _HELD[key]
        _HELD[key] = (f, depth + 1)
    else:
        sweep.mkdir(parents=True, exist_ok=True)
        f = open(sweep / JOBS_LOCK, "a")
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        _HELD[key] = (f, 1)
    try:
        yield
    finally:
        f, depth = _HELD[key]
        if depth > 1:
            _HELD[key] = (f, depth - 1)
        else:
            del _HELD[key]
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            f.close()


def record_jobs(sweep: Path, executor: str, jobs: Iterable[tuple[Job, str | None, Path | None]]) -> None:
    """Add (job, job id, log file) triples to ``jobs.json`` under the sweep's lock, keyed by model id with the score
    ids asked: a resubmitted model's entry is replaced, keeping the scores asked before. A local job's id is its
    submitit controller's PID, recorded with the process's start time; the log is the executor's (submitit's
    stderr file, where a failed task's traceback ends up), None for in-process jobs."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with locked(sweep):
        try:
            data = read_jobs(sweep)
        except SweepError as e:  # not ours to read: kept beside, and the bookkeeping starts again
            os.replace(sweep / JOBS, sweep / f"{JOBS}.corrupt")
            log.warning("%s; set aside as %s.corrupt", e, JOBS)
            data = {"runs": {}}
        for job, job_id, job_log in jobs:
            model = job.model
            before = data["runs"].get(job.model_id, {}).get("scores", [])
            scores = list(dict.fromkeys([*before, *(r.score.score_id for r in job.runs)]))
            data["runs"][job.model_id] = {"job_id": job_id, "executor": executor, "submitted": now, "variant": model.variant,
                                          "train_subset": model.train_subset or "random", "seed": model.seed, "scores": scores}
            if job_log is not None:
                data["runs"][job.model_id]["log"] = str(job_log)
            if executor == "local" and job_id:
                data["runs"][job.model_id]["process"] = process.identity(int(job_id))
        write_json(sweep / JOBS, data)


def _squeue() -> dict[str, str] | None:
    """Job id (``123`` or ``123_4``) -> state of this user's jobs; None without squeue."""
    try:
        out = subprocess.run(["squeue", "-h", "--array", "-t", "all", "-u", str(os.getuid()), "-o", "%i|%T"],
                             capture_output=True, text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return dict(line.split("|", 1) for line in out.split() if "|" in line)


def ended_since(folders: list[Artefact], submitted: str | None) -> bool:
    """Whether the job's last attempt ended (a DONE or FAILED of the model or an asked score written) no earlier
    than its latest submission (jobs.json, to the second): that job has ended, whatever the queue says. A
    FAILED left by an earlier submission says nothing of the job submitted since (it is removed when the new
    attempt starts)."""
    ended = [t for t in (f.ended_at() for f in folders) if t is not None]
    if not ended or not submitted:
        return False
    return max(ended) >= datetime.strptime(submitted, "%Y-%m-%dT%H:%M:%S%z").timestamp() // 1


def asked_scores(folder: ModelFolder, entry: dict[str, Any]) -> list[ScoreFolder]:
    """The scores a model's job asked (jobs.json), else every score folder it has."""
    return [folder.score(s) for s in entry["scores"]] if isinstance(entry.get("scores"), list) else folder.scores()


def outcome(folder: ModelFolder, scores: list[ScoreFolder]) -> tuple[State, Artefact | None]:
    """A model's stored state with its asked scores, and the folder it comes from: the model's while the model is
    not done, else the first corrupt, failed or unfinished score's (incomplete: a score still to make)."""
    state = folder.state()
    if state is not State.DONE:
        return state, folder
    for wanted in (State.CORRUPT, State.FAILED, State.INCOMPLETE, State.ABSENT):
        for score in scores:
            if score.state() is wanted:
                return (State.INCOMPLETE if wanted is State.ABSENT else wanted), score
    return State.DONE, None


def states(sweep: Path) -> list[RunState]:
    """The state of every model recorded in ``jobs.json`` or found as a folder, in submission order."""
    if not sweep.is_dir():
        raise SweepError(f"{sweep}: no such sweep folder")
    recorded = read_jobs(sweep)["runs"]
    model_ids = list(recorded) + sorted(p.name for p in sweep.iterdir()
                                        if p.is_dir() and not p.name.startswith(".") and p.name not in recorded)
    if not model_ids:
        raise SweepError(f"{sweep}: no runs recorded (no {JOBS} and no model folders)")
    queue = _squeue() if any(r.get("executor") == "slurm" for r in recorded.values()) else {}
    out = []
    for model_id in model_ids:
        entry = recorded.get(model_id, {})
        job_id, executor = entry.get("job_id"), entry.get("executor")
        folder = ModelFolder(sweep / model_id)
        scores = asked_scores(folder, entry)
        log = Path(entry["log"]) if entry.get("log") else folder.log_path
        state, source = outcome(folder, scores)
        if state is State.DONE:
            out.append(RunState(model_id, State.DONE, job_id, folder.log_path))
            continue
        live, detail, slurm_state = None, "", ""
        if folder.is_claimed():
            holder = folder.holder()
            live = State.RUNNING
            detail = f"process {holder['pid']} on {holder['host']} holds the model" if holder else "a process holds the model"
        elif executor == "slurm" and job_id and queue is None and not ended_since([folder, *scores], entry.get("submitted")):
            live, detail = State.UNKNOWN, "squeue is not available here"
        elif executor == "slurm" and job_id and queue is not None:
            slurm_state = queue.get(job_id, "")
            live = State.PENDING if slurm_state in _PENDING else State.RUNNING if slurm_state in _RUNNING else None
        elif executor == "local" and process.alive(entry.get("process")):
            live = State.RUNNING
        what = "" if source is folder or source is None else f"score {source.path.name}: "
        if live:
            out.append(RunState(model_id, live, job_id, log, detail))
        elif state is State.CORRUPT:
            out.append(RunState(model_id, State.CORRUPT, job_id, folder.log_path, f"{what}{source.problem()}; {REDO}"))
        elif state is State.FAILED:
            failure = source.failure()
            out.append(RunState(model_id, State.FAILED, job_id, log, what +
                                f"{failure['error']}: {failure['message']} (traceback: {source.file(FAILED)})".lstrip(": ")))
        else:
            ended = f"job {slurm_state or 'gone'}" if executor == "slurm" and job_id else "ended"
            todo = "scores still to make" if folder.is_done() else "no result"
            out.append(RunState(model_id, State.STOPPED, job_id, log, f"{ended} with {todo}; a rerun resumes it"))
    return out


def summary(runs: list[RunState]) -> str:
    """Counts per state, then a line per run that is not done, with its log."""
    counts: dict[State, int] = {}
    for r in runs:
        counts[r.state] = counts.get(r.state, 0) + 1
    lines = [", ".join(f"{n} {s}" for s, n in counts.items())]
    for r in runs:
        if r.state is not State.DONE:
            job = f" job {r.job_id}" if r.job_id else ""
            lines.append(f"  {r.state:<8} {r.model_id}{job}  log {r.log}" + (f"\n           {r.detail}" if r.detail else ""))
    return "\n".join(lines)


def cancel(sweep: Path) -> list[str]:
    """Cancel the pending and running jobs this sweep submitted; returns their ids. A local job is stopped with
    SIGINT (what submitit's LocalJob.cancel sends): its controller and the worker holding the run's claim,
    each only while it is the very process recorded (same host, PID and start time)."""
    live = [r for r in states(sweep) if r.state in (State.PENDING, State.RUNNING) and r.job_id]
    recorded = read_jobs(sweep)["runs"]
    slurm = [r.job_id for r in live if recorded[r.model_id]["executor"] == "slurm"]
    if slurm:
        subprocess.run(["scancel", *slurm], check=True, timeout=60)
    cancelled = list(slurm)
    for r in live:
        if recorded[r.model_id]["executor"] != "local":
            continue
        targets = [p for p in (recorded[r.model_id].get("process"), ModelFolder(sweep / r.model_id).holder()) if process.alive(p)]
        stop(targets)
        if targets:
            cancelled.append(r.job_id)
    return cancelled


#: Seconds `stop` gives a process to end after each signal before the next.
STOP_PATIENCE_S = 5.0


def stop(targets: list[dict[str, Any]]) -> None:
    """End the recorded processes ``targets``: SIGINT (what submitit's LocalJob.cancel sends: the worker saves
    nothing and leaves its last periodic checkpoint), then SIGTERM, then SIGKILL, each after `STOP_PATIENCE_S`
    for those still alive (a process started in a script's background ignores SIGINT). Only the very processes
    recorded are signalled (host, PID and start time)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        targets = [p for p in targets if process.alive(p)]
        for p in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p["pid"], sig)
        deadline = time.monotonic() + STOP_PATIENCE_S
        while any(process.alive(p) for p in targets) and time.monotonic() < deadline:
            time.sleep(0.1)


def status_text(runs: list[RunState]) -> str:
    """One line per model: state, model id, job id and log path (and the failure's last line)."""
    lines = [f"{'state':<8} {'model':<44} {'job':<12} log"]
    for r in runs:
        lines.append(f"{r.state:<8} {r.model_id:<44} {r.job_id or '-':<12} {r.log}" + (f"\n{'':<9}{r.detail}" if r.detail else ""))
    return "\n".join(lines)
