"""Issue #14: every bad value refused before a write, nothing half-done counted as done.

Bad command lines and protocol files exit 2 with one line naming the flag or file and key, and leave
the results folder and the cache byte for byte as they were; a run that failed under other execution
options is retried; a DONE run whose rows were damaged or deleted reads as corrupt everywhere and a
rerun redoes it; infrastructure errors are one state and one line.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import CHECKOUT, killed_at, smoke_spec
from missbench.cli import main
from missbench.core.execution import Execution
from missbench.executors import Options, plan
from missbench.experiment.protocol import ProtocolError, load_protocol
from missbench.experiment.resources import ResourceError, resolve
from missbench.store.run_folder import ModelFolder, load_rows
from missbench.store.sweep import states


RUN = ["--methods", "shaspec", "--budget", "smoke", "--no-progress", "--threads", "1"]


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with the SHA-256 of its content ('dir' for folders)."""
    return {str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A results folder holding a sweep and a file, a cache folder with a recipe, and a folder outside
    protocols/ for protocol files; the cache environment points at the cache folder."""
    results, cache = tmp_path / "results", tmp_path / "cache"
    (results / "s" / "old_run").mkdir(parents=True)
    (results / "s" / "old_run" / "spec.json").write_text("{}\n")
    (results / "afile").write_text("not a folder\n")
    (cache / "brats2018_rfnet_0123456789").mkdir(parents=True)
    (cache / "brats2018_rfnet_0123456789" / "recipe.json").write_text("{}\n")
    monkeypatch.setenv("MISSBENCH_CACHE", str(cache))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    (tmp_path / "elsewhere").mkdir()
    return tmp_path


PROTOCOL = "inherit: non_dedicated\n"  # a file outside protocols/ inherits by name (issue item 7)
CUDA = torch.cuda.is_available()

# (id, command line (OUT, PROTO, RESULTS are replaced), protocol file text or None, what the one line must say)
BAD = [
    ("param-type", RUN + ["--param", "shaspec.alpha=abc"], None, "--param shaspec.alpha='abc': expected a number >= 0"),
    ("param-range", RUN + ["--param", "shaspec.width=0"], None, "--param shaspec.width=0: expected an integer >= 1"),
    ("param-unknown", RUN + ["--param", "shaspec.alpah=1"], None, "--param shaspec: unknown parameter 'alpah'; expected one of"),
    ("training-type", RUN + ["--training", "lr=abc"], None, "--training lr='abc': expected a number > 0"),
    ("training-lr", RUN + ["--training", "lr=0"], None, "--training lr=0: expected a number > 0"),
    ("training-momentum", RUN + ["--training", "momentum=1"], None, "--training momentum=1: expected a number in [0, 1)"),
    ("training-step-every", RUN + ["--training", "step_every=0"], None, "--training step_every=0: expected a number in (0, 1]"),
    ("training-step-gamma", RUN + ["--training", "step_gamma=1.5"], None, "--training step_gamma=1.5: expected a number in (0, 1]"),
    ("training-decay", RUN + ["--training", "weight_decay=-1"], None, "--training weight_decay=-1: expected a number >= 0"),
    ("training-unknown", RUN + ["--training", "momentun=0.9"], None, "--training: unknown parameter 'momentun'; expected one of"),
    ("dataset-param", RUN + ["--dataset-param", "size=8"], None, "--dataset-param size=8: expected an integer >= 16"),
    ("dataset-count", RUN + ["--dataset-param", "n_test=-1"], None, "--dataset-param n_test=-1: expected an integer >= 1"),
    ("file-param", RUN, "method_params: {shaspec: {alpha: abc}}\n", "PROTO: method_params.shaspec.alpha='abc': expected a number"),
    ("file-param-method", RUN, "method_params: {shaspek: {alpha: 1}}\n", "PROTO: method_params.shaspek: unknown method 'shaspek'"),
    ("file-grid", RUN, "grid: {shaspec: {alpha: [0.1, -1]}}\n", "PROTO: grid.shaspec[0].alpha=-1: expected a number >= 0"),
    ("file-training", RUN, "training: {lr: fast}\n", "PROTO: training.lr='fast': expected a number > 0"),
    ("file-step-gamma", RUN, "training: {step_gamma: 0}\n", "PROTO: training.step_gamma=0: expected a number in (0, 1]"),
    ("iterations-0", RUN, "budgets: {smoke: {iterations: 0}}\n", "PROTO: budgets.smoke.iterations=0: expected an integer >= 1"),
    ("iterations-neg", RUN, "budgets: {smoke: {iterations: -3}}\n", "PROTO: budgets.smoke.iterations=-3: expected an integer >= 1"),
    ("batch-0", RUN, "budgets: {smoke: {batch: 0}}\n", "PROTO: budgets.smoke.batch=0: expected an integer >= 1"),
    ("checkpoint-0", RUN, "budgets: {smoke: {checkpoint_every: 0}}\n", "PROTO: budgets.smoke.checkpoint_every=0: expected an integer >= 1"),
    ("log-0", RUN, "budgets: {smoke: {log_every: 0}}\n", "PROTO: budgets.smoke.log_every=0: expected an integer >= 1"),
    ("patch-0", RUN, "budgets: {smoke: {patch: 0}}\n", "PROTO: budgets.smoke.patch=0: expected an integer >= 1 or a list of 3"),
    ("patch-2", RUN, "budgets: {smoke: {patch: [16, 16]}}\n", "PROTO: budgets.smoke.patch=[16, 16]: expected an integer >= 1 or a list of 3"),
    ("overlap-1", RUN, "budgets: {smoke: {overlap: 1}}\n", "PROTO: budgets.smoke.overlap=1: expected a number in [0, 1)"),
    ("val-every", RUN, "budgets: {smoke: {val_every: -1}}\n", "PROTO: budgets.smoke.val_every=-1: expected an integer >= 0"),
    ("budget-dataset", RUN, "budgets: {smoke: {dataset: {size: 8}}}\n", "PROTO: budgets.smoke.dataset.size=8: expected an integer >= 16"),
    ("et-threshold", RUN, "metric: {et_threshold: -5}\n", "PROTO: metric.et_threshold=-5: expected an integer >= 0"),
    ("threads-0", RUN + ["--threads", "0"], None, "--threads=0: expected an integer >= 1"),
    ("threads-neg", RUN + ["--threads", "-3"], None, "--threads=-3: expected an integer >= 1"),
    ("jobs-0", RUN + ["--executor", "local", "--jobs", "0"], None, "--jobs=0: expected an integer >= 1"),
    ("array-parallelism", RUN + ["--array-parallelism", "0"], None, "--array-parallelism=0: expected an integer >= 1"),
    ("seeds-empty", RUN + ["--seeds", ""], None, "--seeds '': expected comma-separated integers"),
    ("device-typo", RUN + ["--device", "tpu9"], None, "--device='tpu9': expected a torch device"),
    ("device-cuda", RUN + ["--device", "cuda"], None, "--device='cuda': no CUDA device is available on this machine"),
    ("out-file", RUN + ["--out", "RESULTS/afile"], None, "--out RESULTS/afile: RESULTS/afile is a file"),
    ("out-below-file", RUN + ["--out", "RESULTS/afile/sweep"], None, "--out RESULTS/afile/sweep: RESULTS/afile is a file"),
    ("slurm-time", RUN + ["--executor", "slurm", "--allow-dirty", "--resource", "time=00:02:00"], None,
     "resources of shaspec: time '00:02:00' minus signal_delay_s 120 and the 60 s by which sbatch may send its warning signal early leaves -60 s"),
    ("threads-over-cores", RUN + ["--threads", "100000"], None, "--threads=100000: expected an integer in [1, "),
    ("compile-backend", RUN + ["--compile", "bogusbackend"], None, "--compile='bogusbackend': expected one of ["),
    ("seeds-overflow", RUN + ["--seeds", "99999999999999999999999"], None, "--seeds '99999999999999999999999': expected integers in [0, 4294967295]"),
    ("seeds-negative", RUN + ["--seeds", "-1"], None, "--seeds '-1': expected integers in [0, 4294967295]"),
    ("out-empty", RUN + ["--out", ""], None, "--out '': expected a folder"),
    ("bf16-cpu", RUN + ["--amp", "bf16"], None, "--amp bf16 on the CPU: torch's CPU bf16 backward of 3-D convolutions"),
    ("subsets-empty", RUN, "subsets: []\n", "PROTO: subsets: expected a non-empty list"),
    ("file-seeds-overflow", RUN, "seeds: [99999999999999999999999]\n", "PROTO: seeds[0] must be an integer in [0, 4294967295]"),
    ("prepare-threads", ["prepare", "--dataset", "brats2018", "--threads", "0"], None, "--threads=0: expected an integer >= 1"),
    ("prepare-jobs", ["prepare", "--dataset", "brats2018", "--jobs", "0"], None, "--jobs=0: expected an integer >= 1"),
    ("export-threads", ["export", "RESULTS/s", "--out", "RESULTS/export", "--threads", "0"], None, "--threads=0: expected an integer >= 1"),
    ("export-device", ["export", "RESULTS/s", "--out", "RESULTS/export", "--device", "tpu9"], None, "--device='tpu9'"),
]


@pytest.mark.parametrize("argv, protocol, message", [
    pytest.param(*b[1:], id=b[0], marks=[pytest.mark.skipif(CUDA, reason="this machine has a GPU")] if b[0] == "device-cuda" else [])
    for b in BAD])
def test_every_bad_value_is_one_line_exit_2_and_nothing_changes(world, capsys, argv, protocol, message):
    results, proto = world / "results", world / "elsewhere" / "bad.yaml"
    argv = [a.replace("RESULTS", str(results)) for a in argv]
    if argv[0] not in ("prepare", "export"):
        argv = ["--protocol", str(proto) if protocol else "non_dedicated", *argv]
        if "--out" not in argv:
            argv += ["--out", str(results / "s")]
    if protocol:
        proto.write_text(PROTOCOL + protocol)
    before = snapshot(world)
    assert main(argv) == 2
    err = capsys.readouterr().err
    message = message.replace("PROTO", str(proto)).replace("RESULTS", str(results))
    assert message in err and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert snapshot(world) == before


def test_a_protocol_outside_protocols_inherits_by_name(world):
    (world / "elsewhere" / "mine.yaml").write_text(PROTOCOL + "seeds: [3]\n")
    proto = load_protocol(world / "elsewhere" / "mine.yaml")
    assert proto.seeds == (3,) and proto.mode == "non_dedicated"
    (world / "elsewhere" / "non_dedicated.yaml").write_text(PROTOCOL.replace("non_dedicated", "protocols_missing") + "\n")
    with pytest.raises(ProtocolError, match="inherit 'protocols_missing': no file .*elsewhere/protocols_missing.yaml or "):
        load_protocol(world / "elsewhere" / "mine.yaml")  # the file's own folder comes first


# --- a run that failed because of how it ran never blocks the corrected command ----------------------

def failed_under(sweep: Path, spec, exe: Execution, environmental: bool) -> ModelFolder:
    """A model folder whose FAILED records an attempt under ``exe``."""
    folder = ModelFolder(sweep / spec.model.model_id)
    folder.start(spec.model, fresh=True)
    folder.fail(RuntimeError("CUDA error: no kernel image is available"), "Traceback ...", asdict(exe), environmental)
    return folder


def test_plan_retries_failures_of_the_environment_or_of_other_execution_options(tmp_path):
    specs = [smoke_spec("zero_fill"), smoke_spec("shaspec")]
    cpu = Execution(progress=False)
    failed_under(tmp_path, specs[0], Execution("cuda", progress=False), environmental=False)
    failed_under(tmp_path, specs[1], cpu, environmental=False)
    todo, left = plan(specs, tmp_path, Options(), Execution())  # progress bars differ: not an execution option
    assert [j.model_id for j in todo] == [specs[0].model.model_id] and list(left) == [specs[1].model.model_id]
    failed_under(tmp_path, specs[1], cpu, environmental=True)
    assert [j.model_id for j in plan(specs, tmp_path, Options(), cpu)[0]] == [s.model.model_id for s in specs]


def test_a_run_that_failed_under_another_device_runs_again(tmp_path, capsys):
    spec = smoke_spec("zero_fill")
    failed_under(tmp_path, spec, Execution("cuda", progress=False), environmental=False)
    assert main(["--methods", "zero_fill", "--budget", "smoke", "--no-progress", "--threads", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "not rerun" not in out and f"{spec.model.model_id}: done" in out
    assert ModelFolder(tmp_path / spec.model.model_id).state() == "done"


# --- DONE is verifiable ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("done") / "s"
    assert main(["--methods", "zero_fill", "--budget", "smoke", "--seeds", "0,1", "--no-progress", "--threads", "1",
                 "--out", str(sweep)]) == 0
    return sweep


def make_tables(sweep: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "analysis/make_tables.py", str(sweep), "--out", str(out), "--no-figures"],
                          cwd=CHECKOUT, capture_output=True, text=True)


@pytest.mark.parametrize("damage", ["corrupt", "delete", "corrupt without checksums"])
def test_damaged_rows_read_as_corrupt_everywhere_and_a_rerun_redoes_them(two_runs, tmp_path, capsys, damage):
    sweep = tmp_path / "s"
    subprocess.run(["cp", "-a", str(two_runs), str(sweep)], check=True)
    expected = load_rows(sweep)
    run = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))[0]
    (score,) = ModelFolder(run).scores()
    rows = score.file("rows.parquet")
    if damage == "delete":
        rows.unlink()
    else:
        rows.write_bytes(b"\0" * rows.stat().st_size)
        if damage == "corrupt without checksums":
            score.file("DONE").write_text("")  # as DONE was written before it recorded checksums
    why = {"corrupt": "rows.parquet does not match its checksum in DONE", "delete": "rows.parquet is missing",
           "corrupt without checksums": "its results do not read"}[damage]
    assert main(["status", str(sweep)]) == 1
    out = capsys.readouterr().out
    assert f"corrupt  {run.name}" in out and why in out and "a rerun will redo it" in out and "2 models: 1 corrupt, 1 done" in out
    assert main(["collect", str(sweep)]) == 1
    captured = capsys.readouterr()
    assert "corrupt" in captured.out and why in captured.out and "Traceback" not in captured.out + captured.err
    tables = make_tables(sweep, tmp_path / "tables")
    text = " ".join(tables.stdout.split())  # the console wraps long lines
    assert tables.returncode == 0 and "Traceback" not in tables.stderr
    assert run.name in text and "corrupt" in text and why in text and "a rerun will redo it" in text
    assert main(["--methods", "zero_fill", "--budget", "smoke", "--seeds", "0,1", "--no-progress", "--threads", "1",
                 "--out", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert f"{run.name}: done" in out and "2 models: 2 done" in out
    pd.testing.assert_frame_equal(load_rows(sweep), expected)


# --- infrastructure errors: one state, one line ---------------------------------------------------------

def test_a_run_folder_deleted_mid_run_is_one_failed_state_and_one_line(tmp_path, capsys, monkeypatch):
    import shutil

    import missbench.engine.run as engine

    def vanishing(ctx):
        shutil.rmtree(ctx.folder.path)
        ctx.folder.save_checkpoint({"step": 0})  # the write the disappearance breaks
        raise AssertionError("unreachable")

    monkeypatch.setattr(engine, "train_model", vanishing)
    assert main(["--methods", "zero_fill", "--budget", "smoke", "--no-progress", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "FAILED, FileNotFoundError" in captured.out and "Traceback" not in captured.out + captured.err
    (state,) = states(tmp_path)
    assert state.state == "failed" and "FileNotFoundError" in state.detail
    assert ModelFolder(tmp_path / state.model_id).failure()["environmental"] is True


def test_a_run_folder_that_cannot_be_written_is_one_failed_state_and_one_line(tmp_path, capsys, monkeypatch):
    import missbench.store.run_folder as store

    spec = smoke_spec("zero_fill")
    folder = tmp_path / spec.model.model_id
    folder.mkdir()
    real_write, real_access = store.write_atomic, store.os.access

    def refused(path, data):  # a read-only folder, even for root (who may write anywhere)
        if Path(path).parent == folder:
            raise PermissionError(13, "Permission denied", str(path))
        real_write(path, data)

    monkeypatch.setattr(store, "write_atomic", refused)
    monkeypatch.setattr(store.os, "access", lambda p, mode: Path(p) != folder and real_access(p, mode))
    assert main(["--methods", "zero_fill", "--budget", "smoke", "--no-progress", "--threads", "1", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    line = next(x for x in captured.out.splitlines() if spec.model.model_id in x and "FAILED" in x)
    assert "NotRecorded" in line and "PermissionError" in line and "FAILED could not be written either" in line
    assert "Traceback" not in captured.out + captured.err
    assert main(["status", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"failed   {spec.model.model_id}" in out and f"{folder} cannot be written" in out


def test_a_time_limit_that_leaves_no_start_up_is_refused():
    """sbatch may send the warning signal up to 60 s before signal_delay_s: with time 2:00 and signal_delay_s 60
    USR2 came 29.5-58 s after each start, and the run never got past its start-up."""
    assert resolve("zero_fill", None, {}, {"time": "00:04:00"})["time"] == "00:04:00"  # 240 - 120 - 60 s: enough
    with pytest.raises(ResourceError, match="leaves 0 s; a job needs at least 60 s to start"):
        resolve("zero_fill", None, {}, {"time": "00:03:00"})
    with pytest.raises(ResourceError, match="signal_delay_s 60 and the 60 s by which sbatch may send its warning signal early"):
        resolve("zero_fill", None, {"signal_delay_s": 60}, {"time": "00:02:00"})


def test_a_checkpoint_that_does_not_load_is_set_aside_and_training_starts_over(tmp_path, monkeypatch):
    """#14 (d): a truncated checkpoint.pt used to fail the run on every retry (only --force recovered)."""
    from missbench.engine.run import run

    spec, exe = smoke_spec("zero_fill"), Execution(progress=False)
    assert run(spec, tmp_path / "a", exe).startswith("done")
    folder = killed_at(spec, tmp_path / "b", monkeypatch, exe, 3)
    checkpoint = (folder / "checkpoint.pt").read_bytes()
    (folder / "checkpoint.pt").write_bytes(checkpoint[: len(checkpoint) // 2])  # a kill mid-write on a non-atomic file system
    assert run(spec, tmp_path / "b", exe).startswith("done")
    assert (folder / "checkpoint.pt.corrupt").read_bytes() == checkpoint[: len(checkpoint) // 2]
    log = (folder / "log.txt").read_text()
    assert "does not load" in log and "training starts from scratch" in log and "resumed from" not in log.split("does not load")[1]
    pd.testing.assert_frame_equal(load_rows(tmp_path / "b"), load_rows(tmp_path / "a"))
