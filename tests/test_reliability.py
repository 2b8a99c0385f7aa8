"""The store under faults the engine cannot prevent: a lock file deleted by hand, a writer killed mid-write,
a checkpoint of another model, records of the wrong shape, a worker that ignores SIGINT, SLURM's own
requeues of a --force run, a job that ran out of time after its last requeue (issue: no traceback, no FAILED
folder, no silent accept)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from conftest import killed_at, smoke_spec
from missbench.cli import main
from missbench.core.execution import Execution
from missbench.engine.run import recorded, run
from missbench.executors.task import RunTask
from missbench.experiment.spec import Job
from missbench.store import process, sweep as sweep_module
from missbench.store.run_folder import ModelFolder, RunBusy, load_rows
from missbench.store.sweep import states, stop

SMOKE = ["--methods", "zero_fill", "--budget", "smoke", "--no-progress", "--threads", "1"]


def test_a_deleted_lock_file_is_claimed_again_or_this_process_stops(tmp_path):
    """Deleting .lock let a second process train the model at once while status said stopped."""
    a = ModelFolder(tmp_path / "m")
    with a.claim():
        (a.path / ".lock").unlink()
        a.check_claim()  # nobody took it: claimed again, on the file there now
        assert (a.path / ".lock").exists() and a.is_claimed()
        (a.path / ".lock").unlink()
        b = ModelFolder(tmp_path / "m")
        held = b._lock(wait=False)  # another process's claim on the new file
        try:
            with pytest.raises(RunBusy, match="its .lock was deleted and another process claimed the model"):
                a.check_claim()
        finally:
            held.close()


def test_a_checkpoint_save_checks_the_claim(tmp_path, monkeypatch):
    spec, exe = smoke_spec("zero_fill"), Execution(progress=False)
    checked = []
    monkeypatch.setattr(ModelFolder, "check_claim", lambda self: checked.append(self.model_id))
    assert run(spec, tmp_path, exe) == "done"
    assert len(checked) >= 2  # the periodic checkpoints at 2 and 4


def test_temporaries_of_a_writer_killed_mid_write_are_removed_when_the_model_is_claimed(tmp_path):
    folder = ModelFolder(tmp_path / "m")
    (folder.path / "score").mkdir(parents=True)
    stale = [folder.path / ".checkpoint.pt.4242.1.tmp", folder.path / "score" / ".rows.parquet.4242.2.tmp"]
    for f in stale:
        f.write_bytes(b"\0" * 1000)
    with folder.claim():
        assert not any(f.exists() for f in stale)


def test_a_checkpoint_of_another_model_is_set_aside_and_training_starts_over(tmp_path, monkeypatch):
    """It loads, but does not fit: it used to block the model until --force."""
    spec, exe = smoke_spec("zero_fill"), Execution(progress=False)
    assert run(spec, tmp_path / "a", exe) == "done"
    folder = killed_at(spec, tmp_path / "b", monkeypatch, exe, 3)
    state = torch.load(folder / "checkpoint.pt", weights_only=False)
    state["model"] = {k: torch.zeros(2, 2) for k in state["model"]}  # another architecture's weights
    torch.save(state, folder / "checkpoint.pt")
    assert run(spec, tmp_path / "b", exe) == "done"
    log = (folder / "log.txt").read_text()
    assert "does not fit the model" in log and (folder / "checkpoint.pt.corrupt").exists()
    assert load_rows(tmp_path / "b").drop(columns=[]).equals(load_rows(tmp_path / "a"))


@pytest.mark.parametrize("name, text", [("DONE", "[1, 2]"), ("DONE", '{"sha256": [1]}'), ("FAILED", "[]"), ("meta.json", "[3]")])
def test_records_of_the_wrong_shape_read_as_corrupt_or_failed_without_a_traceback(tmp_path, capsys, name, text):
    sweep = tmp_path / "s"
    assert main([*SMOKE, "--out", str(sweep)]) == 0
    (model,) = [p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if name == "FAILED":
        (model / "DONE").unlink()
    (model / name).write_text(text)
    capsys.readouterr()
    assert main(["status", str(sweep)]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and ("corrupt" in out or "failed" in out)
    assert main(["collect", str(sweep)]) == 1
    assert "Traceback" not in "".join(capsys.readouterr())
    assert main([*SMOKE, "--out", str(sweep), "--rerun-failed"]) == 0  # redone
    assert "1 models: 1 done" in capsys.readouterr().out


def test_a_jobs_file_of_the_wrong_shape_is_set_aside_by_the_next_run(tmp_path, capsys):
    sweep = tmp_path / "s"
    assert main([*SMOKE, "--out", str(sweep)]) == 0
    (sweep / "jobs.json").write_text('{"runs": {"x": [1]}}')
    assert main(["status", str(sweep)]) == 2
    assert "jobs.json: not a MissBench jobs file" in capsys.readouterr().err
    assert main([*SMOKE, "--out", str(sweep), "--seeds", "1"]) == 0
    assert (sweep / "jobs.json.corrupt").exists() and main(["status", str(sweep)]) == 0


def test_stop_ends_a_process_that_ignores_sigint(monkeypatch):
    """A worker started in a script's background ignores SIGINT: cancel said 'cancelled 1 jobs' and it trained on."""
    monkeypatch.setattr(sweep_module, "STOP_PATIENCE_S", 0.5)
    code = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        stop([process.identity(worker.pid)])
        assert worker.wait(5) == -15 and time.monotonic() - t0 < 5  # SIGTERM, after SIGINT was ignored
    finally:
        worker.kill()


def test_slurm_requeues_of_a_forced_run_resume_instead_of_starting_over(tmp_path, monkeypatch):
    spec = smoke_spec("zero_fill")
    assert RunTask(tmp_path, Execution(progress=False), force=True)(Job((spec,))) == "done"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # SLURM runs the same pickled task again
    assert RunTask(tmp_path, Execution(progress=False), force=True)(Job((spec,))) == "skipped"


def test_a_job_that_ran_out_of_time_after_its_last_requeue_is_stopped_not_failed(tmp_path):
    """submitit raises UncompletedJobError in the job; the model stays resumable and the next command resumes it."""
    UncompletedJobError = type("UncompletedJobError", (Exception,), {})
    folder = ModelFolder(tmp_path / "m")
    folder.path.mkdir()
    with pytest.raises(UncompletedJobError):
        with recorded(folder, Execution()):
            raise UncompletedJobError("Job not requeued because: timed-out too many times.")
    assert not (folder.path / "FAILED").exists() and folder.state() == "incomplete"
    assert [s.state for s in states(tmp_path)] == ["stopped"]
