"""Executors without a cluster: resources merging and errors, failure isolation inline and in local
subprocesses, what a rerun skips, status/collect/cancel from the sweep folder, the preemption hook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from conftest import CHECKOUT, smoke_spec
from missbench.experiment import registry
from missbench.cli import main
from missbench.executors import Options, plan
from missbench.experiment.resources import (ResourceError, load_file, parse_flags, resolve,
                                           slurm_parameters, time_minutes)
from missbench.executors.task import RunTask
from missbench.experiment.protocol import ProtocolError, load_protocol
from missbench.core.execution import Execution
from missbench.experiment.spec import Job, jobs
from missbench.store.run_folder import load_rows
from missbench.store.sweep import record_jobs, states
from missbench.core.method import Method

SMOKE = ["--protocol", "non_dedicated", "--budget", "smoke", "--no-progress", "--threads", "1"]
#: ShaSpec with a DAO weight of 1e30 passes every check up front; its loss overflows at its second training step.
FAILING = ["--methods", "shaspec,zero_fill", "--param", "shaspec.alpha=1e30"]


def write(path, text):
    path.write_text(text)
    return path


# --- resources -------------------------------------------------------------------------------

def test_the_command_line_s_resources_reach_the_slurm_executor():
    """--resource flags become the options' resources (a new Options field once took them positionally, so every
    array ran at the defaults), and a training run still trains."""
    from missbench.cli.run import execution_options, run_parser

    args = run_parser().parse_args(["--methods", "zero_fill", "--executor", "slurm", "--resource", "cpus=3",
                                    "--resource", "time=01:00:00", "--resource", "partition=gpu"])
    opts = execution_options(args, load_protocol(registry.protocol_path("non_dedicated")), ["zero_fill"], dry=True)
    res = opts.resources("zero_fill")
    assert (res["cpus"], res["time"], res["partition"]) == (3, "01:00:00", "gpu") and opts.train is True
    with pytest.raises(TypeError):
        Options("slurm")  # keyword-only


def test_resources_merge_defaults_file_method_protocol_flags(tmp_path):
    f = write(tmp_path / "r.yaml", 'partition: gpu\ntime: "08:00:00"\ncpus: 8\nsetup: [module load cuda]\n'
                                   'sbatch: {mail-type: FAIL}\nmethods:\n  rfnet: {time: "1-00:00:00", mem: 64G}\n')
    file = load_file(f, registry.method_names())
    # the built-in defaults the README states (never submitit's 5 minutes), written out rather than read from the module
    assert resolve("zero_fill", None, {}, {}) == {"time": "04:00:00", "cpus": 2, "gpus": 0, "requeues": 3, "signal_delay_s": 120,
                                               "sbatch": {}, "setup": []}
    assert resolve("zero_fill", file, {}, {})["time"] == "08:00:00"
    rfnet = resolve("rfnet", file, {"cpus": 4, "setup": ["export A=1"]}, parse_flags(["mem=80G", "sbatch={exclude: n1}"]))
    assert rfnet["time"] == "1-00:00:00" and rfnet["cpus"] == 4 and rfnet["mem"] == "80G" and rfnet["partition"] == "gpu"
    assert rfnet["setup"] == ["module load cuda", "export A=1"]
    assert rfnet["sbatch"] == {"mail-type": "FAIL", "exclude": "n1"}
    params = slurm_parameters(rfnet)
    assert params["timeout_min"] == 24 * 60  # always explicit: never submitit's 5-minute default
    assert params["slurm_partition"] == "gpu" and params["slurm_mem"] == "80G" and params["cpus_per_task"] == 4
    assert slurm_parameters(resolve("zero_fill", None, {}, {}))["timeout_min"] == 240


@pytest.mark.parametrize("text, minutes", [("30", 30), ("10:30", 11), ("02:00:00", 120), ("1-00:00:00", 1440), ("2-3", 51 * 60)])
def test_sbatch_time_formats(text, minutes):
    assert time_minutes(text) == minutes


def test_time_flags_stay_strings():
    assert parse_flags(["time=10:30", "gpus=2"]) == {"time": "10:30", "gpus": 2}


@pytest.mark.parametrize("text, message", [
    ("time: 10:30\n", "time 630 is a number; quote times"),
    ("partion: gpu\n", "unknown key 'partion'"),
    ("cpus: many\n", "key 'cpus' must be int"),
    ('time: "soon"\n', "time: 'soon' is not an sbatch time"),
    ("methods:\n  nosuch: {cpus: 2}\n", "methods.nosuch: unknown method"),
    ("methods:\n  rfnet: {gpu: 1}\n", "methods.rfnet: unknown key 'gpu'"),
    ("[1, 2]\n", "expected a mapping at the top level"),
    ("a: [\n", "not valid YAML"),
])
def test_malformed_resources_file_names_file_and_key(tmp_path, capsys, text, message):
    f = write(tmp_path / "r.yaml", text)
    with pytest.raises(ResourceError, match="r.yaml") as e:
        load_file(f, registry.method_names())
    assert message in str(e.value)
    assert main([*SMOKE, "--methods", "zero_fill", "--executor", "slurm", "--resources", str(f), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "r.yaml" in err and message in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_protocol_slurm_block_is_checked(tmp_path):
    base = registry.protocol_path("non_dedicated")
    good = write(tmp_path / "good.yaml", f'inherit: {base}\nslurm: {{time: "01:00:00", gpus: 1}}\n')
    assert load_protocol(good).slurm == {"time": "01:00:00", "gpus": 1}
    bad = write(tmp_path / "bad.yaml", f"inherit: {base}\nslurm: {{time: 90}}\n")
    with pytest.raises(ProtocolError, match=r"bad.yaml: slurm: time 90 is a number"):
        load_protocol(bad)


def test_slurm_refuses_a_dirty_tree_unless_allowed(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("missbench.store.provenance.git_state", lambda root: {"git_sha": "x", "git_dirty": True})
    assert main([*SMOKE, "--methods", "zero_fill", "--executor", "slurm", "--out", str(tmp_path / "s")]) == 2
    assert "--allow-dirty" in capsys.readouterr().err and not (tmp_path / "s").exists()


# --- failure isolation and reruns ---------------------------------------------------------------

def test_inline_failure_is_recorded_the_others_finish_and_exit_is_1(tmp_path, capsys):
    sweep = tmp_path / "s"
    assert main([*SMOKE, *FAILING, "--out", str(sweep)]) == 1
    out = capsys.readouterr().out
    failed = next(sweep.glob("shaspec_*"))
    assert "FloatingPointError" in (failed / "FAILED").read_text() and not (failed / "DONE").exists()
    assert f"traceback: {failed / 'FAILED'}" in out and "1 failed, 1 done" in out
    assert set(load_rows(sweep).method) == {"zero_fill"}
    done = next(sweep.glob("zero_fill_*/*/rows.parquet"))
    before = done.stat().st_mtime_ns
    # A rerun trains nothing: the finished run is skipped, the failed one reported again.
    assert main([*SMOKE, *FAILING, "--out", str(sweep)]) == 1
    out = capsys.readouterr().out
    assert ": skipped, done before" in out and "failed before, not rerun (--rerun-failed)" in out and "FAILED," not in out
    # --rerun-failed retries it (it fails again) and leaves the finished run alone.
    assert main([*SMOKE, *FAILING, "--out", str(sweep), "--rerun-failed"]) == 1
    assert "[1/1] " + failed.name + ": FAILED, FloatingPointError" in capsys.readouterr().out
    assert done.stat().st_mtime_ns == before


def test_local_executor_runs_in_subprocesses_with_the_inline_numbers(tmp_path, capsys):
    assert main([*SMOKE, *FAILING, "--out", str(tmp_path / "inline")]) == 1
    assert main([*SMOKE, *FAILING, "--out", str(tmp_path / "local"), "--executor", "local", "--jobs", "2"]) == 1
    out = capsys.readouterr().out
    pd.testing.assert_frame_equal(load_rows(tmp_path / "inline"), load_rows(tmp_path / "local"))
    jobs = json.loads((tmp_path / "local" / "jobs.json").read_text())["runs"]
    assert {j["executor"] for j in jobs.values()} == {"local"}
    failed = next(r for r in states(tmp_path / "local") if r.state == "failed")
    assert failed.log.name.endswith("_log.err") and "FloatingPointError" in failed.log.read_text() and f"log {failed.log}" in out
    meta = json.loads(next((tmp_path / "local").glob("zero_fill_*/meta.json")).read_text())
    assert meta["executor"] == "local" and meta["slurm"] is None and meta["torch_threads"] == 1


def test_bad_executor_options_are_refused(tmp_path, capsys):
    assert main([*SMOKE, "--methods", "zero_fill", "--executor", "local", "--jobs", "0", "--out", str(tmp_path / "s")]) == 2
    assert "--jobs" in capsys.readouterr().err and not (tmp_path / "s").exists()


# --- status, collect, cancel from the sweep folder ------------------------------------------------

@pytest.fixture
def fake_sweep(tmp_path, monkeypatch):
    """A sweep of five SLURM runs, one in each state, and a fake squeue/scancel."""
    specs = [smoke_spec("zero_fill").with_model(seed=s) for s in range(5)]
    sweep = tmp_path / "s"
    record_jobs(sweep, "slurm", [(Job((s,)), f"999999_{i}", sweep / ".submitit" / f"999999_{i}_0_log.err") for i, s in enumerate(specs)])
    assert RunTask(sweep, Execution(progress=False))(Job((specs[0],))) == "done"
    (sweep / specs[1].model.model_id).mkdir()
    (sweep / specs[1].model.model_id / "FAILED").write_text("Traceback ...\nValueError: boom\n")
    queue = {"999999_2": "RUNNING", "999999_3": "PENDING", "999999_4": "CANCELLED"}
    calls = []
    monkeypatch.setattr("missbench.store.sweep._squeue", lambda: queue)
    monkeypatch.setattr("missbench.store.sweep.subprocess", SimpleNamespace(run=lambda cmd, **kw: calls.append(cmd)))
    return sweep, specs, calls


def test_status_reads_states_from_run_folders_and_the_queue(fake_sweep, capsys):
    sweep, specs, _ = fake_sweep
    got = {r.model_id: r.state for r in states(sweep)}
    assert got == dict(zip([s.model.model_id for s in specs], ["done", "failed", "running", "pending", "stopped"]))
    assert main(["status", str(sweep)]) == 1
    out = capsys.readouterr().out
    assert f"{sweep}/.submitit/999999_1_0_log.err" in out and "ValueError: boom" in out
    assert "5 models: 1 done, 1 failed, 1 running, 1 pending, 1 stopped" in out


def test_collect_writes_the_finished_rows_and_lists_the_rest(fake_sweep, capsys):
    sweep, specs, _ = fake_sweep
    assert main(["collect", str(sweep)]) == 1
    out = capsys.readouterr().out
    assert "Avg" in out and "zero_fill" in out and "stopped  " + specs[4].model.model_id in out
    pd.testing.assert_frame_equal(pd.read_parquet(sweep / "collected.parquet"), load_rows(sweep))
    assert set(load_rows(sweep).run_id) == {specs[0].run_id}


def test_cancel_cancels_only_queued_and_running_jobs(fake_sweep, capsys):
    sweep, _, calls = fake_sweep
    assert main(["cancel", str(sweep)]) == 0
    assert calls == [["scancel", "999999_2", "999999_3"]]
    assert "cancelled 2 jobs" in capsys.readouterr().out


def test_rerun_plan_skips_done_queued_and_failed_runs(fake_sweep):
    sweep, specs, _ = fake_sweep
    ids = [s.model.model_id for s in specs]
    todo, left = plan(specs, sweep, Options())
    assert [j.model_id for j in todo] == [ids[4]] and set(left) == set(ids[:4])
    assert [j.model_id for j in plan(specs, sweep, Options(rerun_failed=True))[0]] == [ids[1], ids[4]]
    assert [j.model_id for j in plan(specs, sweep, Options(force=True))[0]] == [ids[0], ids[1], ids[4]]


def test_sweep_commands_on_a_missing_folder_exit_2(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nosuch")]) == 2
    assert "no such sweep folder" in capsys.readouterr().err


# --- preemption: checkpoint() saves the live state ------------------------------------------------

def test_checkpoint_saves_the_live_state_and_the_resumed_run_has_the_same_numbers(tmp_path, monkeypatch):
    spec = smoke_spec("zero_fill")  # 4 iterations, periodic checkpoints at 2 and 4
    task = RunTask(tmp_path / "a", Execution(progress=False), force=True)
    assert task(spec) == "done"
    original, resubmitted = Method.set_step, []

    def preempted(self, step, total):
        # in the main thread, as a signal handler runs: iteration 3 has its batch, past the periodic checkpoint at 2
        if step == 3:
            resubmitted.append(RunTask(tmp_path / "b", Execution(progress=False), force=True).checkpoint(spec))
            raise KeyboardInterrupt
        return original(self, step, total)

    monkeypatch.setattr(Method, "set_step", preempted)
    with pytest.raises(KeyboardInterrupt):
        RunTask(tmp_path / "b", Execution(progress=False), force=True)(spec)
    run_dir = tmp_path / "b" / spec.model.model_id
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == 3
    assert not (run_dir / "FAILED").exists()
    again = resubmitted[0]
    assert again.function.force is False and again.args == (spec,)
    monkeypatch.setattr(Method, "set_step", original)
    assert again.function(*again.args) == "done"
    assert "resumed from" in (run_dir / "log.txt").read_text() and "at iteration 3" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(load_rows(tmp_path / "a"), load_rows(tmp_path / "b"))


def fake_squeue(folder, lines: str):
    """The PATH with a ``squeue`` first that prints ``lines``: a cluster's queue as a fresh process reads it."""
    folder.mkdir()
    (folder / "squeue").write_text(f"#!/bin/sh\nprintf '{lines}'\n")
    (folder / "squeue").chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_bench_status_runs_from_a_fresh_process(fake_sweep, tmp_path):
    """A later process reads the states from the run folders and from squeue's output."""
    sweep, _, _ = fake_sweep
    path = fake_squeue(tmp_path / "bin", "999999_2|RUNNING\\n999999_3|PENDING\\n999999_4|CANCELLED\\n")
    out = subprocess.run([sys.executable, "bench.py", "status", str(sweep)], cwd=CHECKOUT, capture_output=True, text=True,
                         env={**os.environ, "PATH": path})
    assert out.returncode == 1 and "5 models: 1 done, 1 failed, 1 running, 1 pending, 1 stopped" in out.stdout


def test_status_without_squeue_says_unknown_and_why(fake_sweep, monkeypatch, capsys):
    """Without squeue a run that has not ended since its submission is unknown: a failed run resubmitted
    with --rerun-failed keeps its FAILED until the new attempt starts, and only squeue knows it is queued.
    A run whose FAILED was written after its submission has failed: its job is over, queue or not."""
    sweep, specs, _ = fake_sweep
    monkeypatch.setattr("missbench.store.sweep._squeue", lambda: None)
    ids = [s.model.model_id for s in specs]
    got = {r.model_id: (r.state, r.detail) for r in states(sweep)}
    assert got[ids[0]][0] == "done" and got[ids[1]][0] == "failed" and "ValueError: boom" in got[ids[1]][1]
    assert {got[i] for i in ids[2:]} == {("unknown", "squeue is not available here")}
    assert main(["status", str(sweep)]) == 1
    assert "5 models: 1 done, 1 failed, 3 unknown" in capsys.readouterr().out

    failed = sweep / ids[1] / "FAILED"
    an_hour_before = time.time() - 3600
    os.utime(failed, (an_hour_before, an_hour_before))  # the FAILED of an attempt before the latest submission
    got = {r.model_id: (r.state, r.detail) for r in states(sweep)}
    assert got[ids[1]] == ("unknown", "squeue is not available here")


def test_slurm_submission_is_one_array_per_resource_profile_split_under_max_array_size(tmp_path, monkeypatch):
    import submitit

    from missbench.executors.slurm import submit_slurm

    arrays = []

    class FakeExecutor:
        def __init__(self, folder, cluster, slurm_max_num_timeout):
            self.params = {"max_num_timeout": slurm_max_num_timeout}

        def update_parameters(self, **params):
            self.params.update(params)

        def map_array(self, task, jobs):
            arrays.append((dict(self.params), [j.model_id for j in jobs], task.threads))
            return [SimpleNamespace(job_id=f"{len(arrays)}_{i}", paths=SimpleNamespace(stderr=tmp_path / f"{len(arrays)}_{i}_0_log.err"))
                    for i in range(len(jobs))]

    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    specs = [smoke_spec(m).with_model(seed=s) for m in ("zero_fill", "shaspec") for s in range(5)]
    res = {"zero_fill": resolve("zero_fill", None, {}, {}), "shaspec": resolve("shaspec", None, {}, {"time": "1-00:00:00", "cpus": 4})}
    opts = Options(executor="slurm", array_parallelism=3, max_array_size=2, resources=lambda m: res[m])
    submit_slurm(jobs(specs), tmp_path, Execution(), opts, lambda line: None)
    assert [len(ids) for _, ids, _ in arrays] == [2, 2, 1, 2, 2, 1]
    assert all(p["timeout_min"] == 240 and p["cpus_per_task"] == 2 and t == 2 for p, _, t in arrays[:3])
    assert all(p["timeout_min"] == 1440 and p["cpus_per_task"] == 4 and t == 4 for p, _, t in arrays[3:])
    assert {p["slurm_array_parallelism"] for p, _, _ in arrays} == {3} and arrays[0][0]["max_num_timeout"] == 3
    recorded = json.loads((tmp_path / "jobs.json").read_text())["runs"]
    assert recorded[specs[4].model.model_id]["job_id"] == "3_0" and {j["executor"] for j in recorded.values()} == {"slurm"}
    assert recorded[specs[4].model.model_id]["log"] == str(tmp_path / "3_0_0_log.err")
