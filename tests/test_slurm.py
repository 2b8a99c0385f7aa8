"""The SLURM executor on a real cluster (CI starts one with `scripts/slurm_local.sh up`): array jobs
give the inline numbers, a failing run fails alone, a preempted run checkpoints, requeues and
finishes with the uninterrupted numbers, and status/collect/cancel work from fresh processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import CHECKOUT
from missbench.experiment import registry
from missbench.cli import main
from missbench.store.run_folder import load_rows
from missbench.store.state import LIVE, State
from missbench.store.sweep import cancel, states


def no_cluster() -> str:
    """Why these tests cannot run here ("" when a SLURM controller answers). SLURM's commands can be
    installed with no controller running (a workstation, a stopped one-node cluster): that is no cluster."""
    if shutil.which("sbatch") is None:
        return "no SLURM: sbatch is not on PATH (start a one-node cluster with scripts/slurm_local.sh up)"
    try:
        answer = subprocess.run(["sinfo", "--noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"no SLURM cluster answers sinfo: {e}"
    return "" if answer.returncode == 0 else f"no SLURM cluster answers sinfo: {answer.stderr.strip()}"


NO_CLUSTER = no_cluster()
if NO_CLUSTER and os.environ.get("MISSBENCH_REQUIRE_SLURM"):  # CI's SLURM step: a cluster that did not start is an error
    raise RuntimeError(f"MISSBENCH_REQUIRE_SLURM is set but {NO_CLUSTER}")
pytestmark = [
    pytest.mark.skipif(bool(NO_CLUSTER), reason=NO_CLUSTER),
    pytest.mark.slurm,
]
#: One CPU per task and one torch thread on both paths, so the float sums (and rows) match.
SLURM = ["--executor", "slurm", "--allow-dirty", "--resource", "cpus=1", "--resource", "time=00:30:00"]
COMMON = ["--budget", "smoke", "--no-progress", "--threads", "1"]
KEY = ["run_id", "eval_subset", "case_id", "region", "metric"]


def bench(*args: str) -> subprocess.CompletedProcess:
    """bench.py in a fresh process."""
    return subprocess.run([sys.executable, "bench.py", *args], cwd=CHECKOUT, capture_output=True, text=True, timeout=600)


def sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEY).reset_index(drop=True)


def wait_until(condition, timeout: float, what: str, poll: float = 1.0) -> None:
    t0 = time.time()
    while not condition():
        if time.time() - t0 > timeout:
            raise TimeoutError(f"{what} after {timeout} s")
        time.sleep(poll)


def ended(sweep: Path) -> bool:
    return all(r.state not in LIVE for r in states(sweep))


@pytest.fixture
def sweeps(tmp_path):
    """Sweep folders of a test; whatever they still have queued is cancelled at the end."""
    yield tmp_path
    for jobs in tmp_path.glob("*/jobs.json"):
        cancel(jobs.parent)


def test_dedicated_array_job_gives_the_inline_rows_and_status_collect_work_later(sweeps):
    args = ["--protocol", "dedicated", "--methods", "shaspec,zero_fill", *COMMON]
    assert main([*args, "--out", str(sweeps / "inline")]) == 0
    t0 = time.time()
    submitted = bench(*args, *SLURM, "--out", str(sweeps / "slurm"))
    assert submitted.returncode == 0, submitted.stderr
    assert "30 models queued" in submitted.stdout and time.time() - t0 < 60  # returns once queued
    assert len(json.loads((sweeps / "slurm" / "jobs.json").read_text())["runs"]) == 30
    wait_until(lambda: ended(sweeps / "slurm"), 900, "the array did not finish")
    status = bench("status", str(sweeps / "slurm"))
    assert status.returncode == 0 and "30 models: 30 done" in status.stdout
    collected = bench("collect", str(sweeps / "slurm"))
    assert collected.returncode == 0 and "Avg" in collected.stdout
    pd.testing.assert_frame_equal(sorted_rows(pd.read_parquet(sweeps / "slurm" / "collected.parquet")),
                                  sorted_rows(load_rows(sweeps / "inline")))
    meta = json.loads(next((sweeps / "slurm").glob("zero_fill_*/meta.json")).read_text())
    assert meta["executor"] == "slurm" and meta["slurm"]["slurm_array_task_id"].isdigit()
    assert meta["slurm"]["slurm_array_job_id"] and meta["slurm"]["slurm_job_id"]
    # A rerun of the finished sweep submits nothing.
    again = bench(*args, *SLURM, "--out", str(sweeps / "slurm"))
    assert again.returncode == 0 and again.stdout.count(": skipped, done before") == 30 and "queued" not in again.stdout


def test_two_submissions_at_once_queue_each_run_once_and_jobs_json_keeps_every_job(sweeps):
    args = [sys.executable, "bench.py", "--protocol", "non_dedicated", "--methods", "zero_fill", "--seeds", "0,1,2", *COMMON, *SLURM,
            "--out", str(sweeps / "s")]
    procs = [subprocess.Popen(args, cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    text = "".join(out for out, _ in outs)
    assert text.count("submitted 3 models as SLURM array job") == 1 and text.count(": already ") == 3, text
    jobs = json.loads((sweeps / "s" / "jobs.json").read_text())["runs"]
    assert len(jobs) == 3 and len({j["job_id"].split("_")[0] for j in jobs.values()}) == 1
    wait_until(lambda: ended(sweeps / "s"), 900, "the array did not finish")
    models = [sweeps / "s" / model_id for model_id in jobs]
    assert all((m / "DONE").exists() and (m / "log.txt").read_text().count(f"model {m.name}: zero_fill on") == 1 for m in models)


def test_a_failing_run_fails_its_job_alone_and_is_reported_with_its_log(sweeps):
    out = bench("--protocol", "non_dedicated", "--methods", "shaspec,zero_fill", "--param", "shaspec.alpha=1e30",
                *COMMON, *SLURM, "--wait", "--out", str(sweeps / "s"))
    assert out.returncode == 1, out.stderr
    assert "2 models: 1 failed, 1 done" in out.stdout
    failed = next(r for r in states(sweeps / "s") if r.state == State.FAILED)
    assert f"log {failed.log}" in out.stdout and "FloatingPointError" in failed.log.read_text()
    job = subprocess.run(["scontrol", "show", "job", failed.job_id], capture_output=True, text=True).stdout
    assert "JobState=FAILED" in job  # the task re-raised: SLURM sees the failure too


def long_protocol(folder: Path, iterations: int = 150) -> Path:
    """Zero-fill trained for ``iterations`` iterations with no periodic checkpoint before the end."""
    path = folder / f"long{iterations}.yaml"
    path.write_text(f"inherit: {registry.protocol_path('non_dedicated')}\nsubsets: [FLAIR, FLAIR+T1+T1c+T2]\n"
                    f"budgets:\n  long: {{iterations: {iterations}, patch: 16, batch: 1, checkpoint_every: 100000, log_every: 1,"
                    " dataset: {size: 24, n_train: 3, n_val: 1, n_test: 2}}\n")
    return path


def test_a_preempted_run_checkpoints_requeues_and_ends_with_the_uninterrupted_numbers(sweeps):
    # 600 iterations (about 14 s at one thread) leave the signal seconds to arrive: with 150 (3.5 s) a run
    # on a busy CI machine once finished before SLURM delivered it.
    iterations = 600
    args = ["--protocol", str(long_protocol(sweeps, iterations)), "--methods", "zero_fill", "--budget", "long", "--no-progress", "--threads", "1"]
    assert main([*args, "--out", str(sweeps / "inline")]) == 0
    assert bench(*args, *SLURM, "--out", str(sweeps / "slurm")).returncode == 0
    (run,) = states(sweeps / "slurm")
    log = sweeps / "slurm" / run.model_id / "log.txt"
    wait_until(lambda: log.exists() and "iteration 10 " in log.read_text(), 180, "training did not start", poll=0.1)
    subprocess.run(["scancel", "--signal=USR2", run.job_id], check=True)  # what a preemption sends first
    wait_until(lambda: ended(sweeps / "slurm"), 300, "the requeued run did not finish")
    text = log.read_text()
    # The handler saves the state of the last iteration boundary; a signal that lands while the optimiser
    # updates (one CI run in many) finds none and leaves the last periodic checkpoint, here none, so the
    # requeued run starts again. Both give the uninterrupted numbers; test_executors holds the save itself.
    assert text.count("preempted: ") == 1
    saved = re.search(r"saved the state at iteration (\d+) on request", text)
    if saved:
        step = int(saved.group(1))
        assert 10 <= step < iterations and f"at iteration {step}" in text.split("resumed from")[1].splitlines()[0]
    else:
        assert "preempted: resuming from the last periodic checkpoint" in text and "resumed from" not in text
    meta = json.loads((sweeps / "slurm" / run.model_id / "meta.json").read_text())
    assert meta["slurm"]["slurm_restart_count"] == "1"
    pd.testing.assert_frame_equal(load_rows(sweeps / "inline"), load_rows(sweeps / "slurm"))


def test_cancel_from_a_fresh_process_stops_the_queued_runs(sweeps):
    # Runs far longer than the test, so they cannot finish between submission and cancel on a quiet machine.
    args = ["--protocol", str(long_protocol(sweeps, 50_000)), "--methods", "zero_fill", "--budget", "long", "--seeds", "0,1",
            "--no-progress", *SLURM, "--out", str(sweeps / "s")]
    assert bench(*args).returncode == 0
    out = bench("cancel", str(sweeps / "s"))
    assert out.returncode == 0 and "cancelled 2 jobs" in out.stdout
    wait_until(lambda: ended(sweeps / "s"), 60, "cancelled jobs still queued")
    assert {r.state for r in states(sweeps / "s")} == {State.STOPPED}
    assert bench("status", str(sweeps / "s")).stdout.count("stopped") >= 2


def test_a_refused_submission_is_one_line_and_exit_2(sweeps):
    out = bench("--methods", "zero_fill", *COMMON, *SLURM, "--resource", "partition=nosuch", "--out", str(sweeps / "s"))
    assert out.returncode == 2 and "bench.py: error: sbatch refused the array of 1 models" in out.stderr
    assert "nosuch" in out.stderr.splitlines()[-1]


def test_max_array_size_comes_from_the_cluster():
    from missbench.executors.slurm import max_array_size

    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    assert max_array_size(None) == int(re.search(r"MaxArraySize\s*=\s*(\d+)", config).group(1))
    assert max_array_size(7) == 7
