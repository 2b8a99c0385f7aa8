"""The callable every executor runs: `missbench.engine.run.run` with the job's threads, and the
preemption hook submitit calls (it looks for a ``checkpoint`` method)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from missbench.core.execution import Execution, set_threads
from missbench.engine.checkpoint import save_live_state
from missbench.engine.run import run
from missbench.experiment.spec import Job
from missbench.store.run_folder import RunBusy

log = logging.getLogger("missbench")
#: What a task returns for a run that another process is running.
BUSY = "running elsewhere"


class RunTask:
    """Run one job (a model and its scores) into the sweep folder. A failure is recorded in a FAILED by the run skeleton
    and raised again, so the job fails too; earlier results are never touched. On preemption or timeout
    submitit calls ``checkpoint``, which saves the live training state and resubmits the same task."""

    def __init__(self, sweep_dir: Path, exe: Execution, force: bool = False, threads: int | None = None, train: bool = True) -> None:
        self.sweep_dir, self.exe, self.force, self.threads, self.train = Path(sweep_dir), exe, force, threads, train

    def __call__(self, job: Job) -> str:
        if self.threads:
            set_threads(self.threads)
        # --force applies to the submission, not to SLURM's own requeues of it (after a node failure or scontrol
        # requeue the same task runs again): those resume from the checkpoint instead of training from zero.
        force = self.force and not int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        try:
            return run(job, self.sweep_dir, self.exe, force, self.train)
        except RunBusy:
            return BUSY

    def checkpoint(self, job: Job) -> Any:
        """Save the training state (resume reads it from checkpoint.pt) and resubmit without --force,
        so a requeued run resumes instead of starting over."""
        import submitit

        saved = save_live_state()
        log.info("preempted: %s", "saved the training state" if saved else "resuming from the last periodic checkpoint")
        return submitit.helpers.DelayedSubmission(RunTask(self.sweep_dir, self.exe, False, self.threads, self.train), job)
