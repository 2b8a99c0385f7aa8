"""Concurrency and bookkeeping (issue #14 item 7): one process per run, complete jobs.json under concurrent
writers, process records that survive PID reuse, and `cancel` stopping the worker itself. The SLURM
variant of two submissions at once is in tests/test_slurm.py."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CHECKOUT, smoke_spec
from missbench.cli import main
from missbench.core.execution import Execution
from missbench.executors import Options
from missbench.executors.inline import run_inline
from missbench.executors.task import BUSY, RunTask
from missbench.store import process
from missbench.experiment.spec import Job
from missbench.store.run_folder import ModelFolder
from missbench.store.sweep import JOBS, SweepError, cancel, read_jobs, record_jobs, states


SMOKE = ["--methods", "zero_fill", "--budget", "smoke", "--seeds", "0,1", "--no-progress", "--threads", "1"]


def starts(folder: Path) -> int:
    """How many attempts trained the model: its log's start lines."""
    log = folder / "log.txt"
    return len(re.findall(rf"model {folder.name}: zero_fill on", log.read_text())) if log.exists() else 0


def test_a_claimed_run_is_running_elsewhere_and_counted_as_running(tmp_path, capsys):
    specs = [smoke_spec("zero_fill"), smoke_spec("zero_fill").with_model(seed=1)]
    ids = [s.model.model_id for s in specs]
    busy = ModelFolder(tmp_path / ids[0])
    lines: list[str] = []
    with busy.claim():
        assert RunTask(tmp_path, Execution(progress=False))(Job((specs[0],))) == BUSY
        run_inline([Job((s,)) for s in specs], tmp_path, Execution(progress=False), Options(), lines.append)
        assert f"{ids[0]}: running elsewhere" in lines[0] and f"{ids[1]}: done" in lines[1]
        assert {r.model_id: r.state for r in states(tmp_path)} == {ids[0]: "running", ids[1]: "done"}
        assert process.alive(busy.holder()) and busy.holder()["pid"] == os.getpid()
        assert main([*SMOKE, "--out", str(tmp_path)]) == 0  # a second command leaves it alone and counts it
        out = capsys.readouterr().out
        assert f"{ids[0]}: already running elsewhere (process {os.getpid()}" in out and "1 running" in out
    assert starts(tmp_path / ids[0]) == 0 and starts(tmp_path / ids[1]) == 1


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_the_same_sweep_started_twice_at_once_trains_every_run_once(tmp_path, executor):
    args = [sys.executable, "bench.py", *SMOKE, "--executor", executor, "--out", str(tmp_path)]
    procs = [subprocess.Popen(args, cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    runs = [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(runs) == 2 and all(ModelFolder(r).state() == "done" and starts(r) == 1 for r in runs), outs
    assert not any((r / "FAILED").exists() for r in runs)
    assert set(read_jobs(tmp_path)["runs"]) == {r.name for r in runs}
    assert all("Traceback" not in out + err for out, err in outs)


def _record(sweep: Path, specs: list, start: multiprocessing.Barrier) -> None:
    start.wait()
    for spec in specs:
        record_jobs(sweep, "inline", [(Job((spec,)), None, None)])


def _read(sweep: Path, start: multiprocessing.Barrier, bad: multiprocessing.Value, stop: multiprocessing.Event) -> None:
    start.wait()
    while not stop.is_set():
        try:
            read_jobs(sweep)
        except SweepError:
            bad.value += 1


def test_two_processes_recording_300_jobs_each_keep_600(tmp_path):
    base = smoke_spec("zero_fill")
    specs = [base.with_model(seed=i) for i in range(600)]
    ctx = multiprocessing.get_context("fork")
    start, stop, bad = ctx.Barrier(3), ctx.Event(), ctx.Value("i", 0)
    writers = [ctx.Process(target=_record, args=(tmp_path, specs[k::2], start)) for k in range(2)]
    reader = ctx.Process(target=_read, args=(tmp_path, start, bad, stop))
    for p in [*writers, reader]:
        p.start()
    for p in writers:
        p.join(300)
    stop.set()
    reader.join(60)
    assert [p.exitcode for p in [*writers, reader]] == [0, 0, 0]
    assert len(read_jobs(tmp_path)["runs"]) == 600 and bad.value == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_reused_pid_is_not_trusted_and_cancel_spares_it(tmp_path):
    job = Job((smoke_spec("zero_fill"),))
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        record_jobs(tmp_path, "local", [(job, str(sleeper.pid), None)])
        assert [r.state for r in states(tmp_path)] == ["running"]
        data = json.loads((tmp_path / JOBS).read_text())
        data["runs"][job.model_id]["process"]["started"] = "1"  # as if the PID now belonged to another process
        (tmp_path / JOBS).write_text(json.dumps(data))
        assert [r.state for r in states(tmp_path)] == ["stopped"]
        assert cancel(tmp_path) == [] and sleeper.poll() is None
        record_jobs(tmp_path, "local", [(job, str(sleeper.pid), None)])  # the real record: cancel stops it
        assert cancel(tmp_path) == [str(sleeper.pid)] and sleeper.wait(10) == -signal.SIGINT
    finally:
        sleeper.kill()


@pytest.mark.slow
def test_local_cancel_stops_the_worker_that_holds_the_run(tmp_path):
    proto = tmp_path / "long.yaml"
    proto.write_text("inherit: non_dedicated\nsubsets: [FLAIR, FLAIR+T1+T1c+T2]\nbudgets:\n  long: {iterations: 50000, patch: 16, "
                     "batch: 1, checkpoint_every: 100000, log_every: 1, dataset: {size: 24, n_train: 3, n_val: 1, n_test: 2}}\n")
    sweep = tmp_path / "s"
    bench = subprocess.Popen([sys.executable, "bench.py", "--protocol", str(proto), "--methods", "zero_fill", "--budget", "long",
                              "--no-progress", "--threads", "1", "--executor", "local", "--out", str(sweep)],
                             cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not list(sweep.glob("*/log.txt")) or "iteration 3 " not in next(sweep.glob("*/log.txt")).read_text():
            assert time.time() < deadline and bench.poll() is None, bench.communicate()
            time.sleep(1)
        (run,) = states(sweep)
        holder = ModelFolder(sweep / run.model_id).holder()
        assert run.state == "running" and holder["pid"] != int(run.job_id)  # the worker, not submitit's controller
        assert b"submitit" in Path(f"/proc/{holder['pid']}/cmdline").read_bytes()
        assert cancel(sweep) == [run.job_id]
        while process.alive(holder):
            assert time.time() < deadline
            time.sleep(0.5)
        bench.communicate(timeout=120)
        assert [r.state for r in states(sweep)] == ["stopped"]
    finally:
        bench.kill()
