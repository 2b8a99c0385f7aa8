"""The callable every executor runs: ``missbench.engine.run.run`` plus a FAILED marker and requeue support."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import submitit
import torch

from missbench.engine.run import run
from missbench.experiment.spec import Execution, RunSpec
from missbench.store.run_folder import write_atomic
from missbench.store.sweep import FAILED
from missbench.engine.train import save_live_state

log = logging.getLogger("missbench")


class RunTask(submitit.helpers.Checkpointable):
    """Run one spec into the sweep folder. An exception writes ``<run>/FAILED`` (the traceback) and is
    raised again, so the job fails too; earlier results are never touched. On preemption or timeout
    submitit calls ``checkpoint``, which saves the live training state and resubmits the same task."""

    def __init__(self, sweep_dir: Path, exe: Execution, force: bool = False, threads: int | None = None) -> None:
        self.sweep_dir, self.exe, self.force, self.threads = Path(sweep_dir), exe, force, threads

    def __call__(self, spec: RunSpec) -> str:
        if self.threads:
            torch.set_num_threads(self.threads)
        run_dir = self.sweep_dir / spec.run_id
        (run_dir / FAILED).unlink(missing_ok=True)
        try:
            return run(spec, self.sweep_dir, self.exe, self.force)
        except Exception:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(run_dir / FAILED, traceback.format_exc().encode())
            raise

    def checkpoint(self, spec: RunSpec) -> submitit.helpers.DelayedSubmission:
        """Save the training state (resume reads it from checkpoint.pt) and resubmit without --force,
        so a requeued run resumes instead of starting over."""
        saved = save_live_state()
        log.info("preempted: %s", "saved the training state" if saved else "resuming from the last periodic checkpoint")
        return submitit.helpers.DelayedSubmission(RunTask(self.sweep_dir, self.exe, False, self.threads), spec)
