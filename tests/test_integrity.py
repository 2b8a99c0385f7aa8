"""Issue #14: every bad value refused before a write, nothing half-done counted as done.

Bad command lines and protocol files exit 2 with one line naming the flag or file and key, and leave
the results folder and the cache byte for byte as they were; a run that failed under other execution
options is retried; a DONE run whose rows were damaged or deleted reads as corrupt everywhere and a
rerun redoes it; infrastructure errors are one state and one line.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from conftest import smoke_spec
from missbench.cli import main
from missbench.core.execution import Execution
from missbench.executors import Options, plan
from missbench.experiment.protocol import ProtocolError, load_protocol
from missbench.store.run_folder import RunFolder

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
    ("param-unknown", RUN + ["--param", "shaspec.alpah=1"], None, "--param shaspec.alpah: unknown parameter; expected one of"),
    ("training-type", RUN + ["--training", "lr=abc"], None, "--training lr='abc': expected a number > 0"),
    ("training-lr", RUN + ["--training", "lr=0"], None, "--training lr=0: expected a number > 0"),
    ("training-momentum", RUN + ["--training", "momentum=1"], None, "--training momentum=1: expected a number in [0, 1)"),
    ("training-step-every", RUN + ["--training", "step_every=0"], None, "--training step_every=0: expected a number in (0, 1]"),
    ("training-step-gamma", RUN + ["--training", "step_gamma=1.5"], None, "--training step_gamma=1.5: expected a number in (0, 1]"),
    ("training-decay", RUN + ["--training", "weight_decay=-1"], None, "--training weight_decay=-1: expected a number >= 0"),
    ("training-unknown", RUN + ["--training", "momentun=0.9"], None, "--training momentun: unknown parameter"),
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
    assert proto.data["seeds"] == [3] and proto.data["mode"] == "non_dedicated"
    (world / "elsewhere" / "non_dedicated.yaml").write_text(PROTOCOL.replace("non_dedicated", "protocols_missing") + "\n")
    with pytest.raises(ProtocolError, match="inherit 'protocols_missing': no file .*elsewhere/protocols_missing.yaml or "):
        load_protocol(world / "elsewhere" / "mine.yaml")  # the file's own folder comes first


# --- a run that failed because of how it ran never blocks the corrected command ----------------------

def failed_under(sweep: Path, spec, exe: Execution, environmental: bool) -> RunFolder:
    """A run folder whose FAILED records an attempt under ``exe``."""
    folder = RunFolder(sweep / spec.run_id)
    folder.start(spec, fresh=True)
    folder.fail(RuntimeError("CUDA error: no kernel image is available"), "Traceback ...", asdict(exe), environmental)
    return folder


def test_plan_retries_failures_of_the_environment_or_of_other_execution_options(tmp_path):
    specs = [smoke_spec("zero_fill"), smoke_spec("shaspec")]
    cpu = Execution(progress=False)
    failed_under(tmp_path, specs[0], Execution("cuda", progress=False), environmental=False)
    failed_under(tmp_path, specs[1], cpu, environmental=False)
    todo, left = plan(specs, tmp_path, Options(), Execution())  # progress bars differ: not an execution option
    assert [s.run_id for s in todo] == [specs[0].run_id] and list(left) == [specs[1].run_id]
    failed_under(tmp_path, specs[1], cpu, environmental=True)
    assert [s.run_id for s in plan(specs, tmp_path, Options(), cpu)[0]] == [s.run_id for s in specs]


def test_a_run_that_failed_under_another_device_runs_again(tmp_path, capsys):
    spec = smoke_spec("zero_fill")
    failed_under(tmp_path, spec, Execution("cuda", progress=False), environmental=False)
    assert main(["--methods", "zero_fill", "--budget", "smoke", "--no-progress", "--threads", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "not rerun" not in out and f"{spec.run_id}: done" in out
    assert RunFolder(tmp_path / spec.run_id).state() == "done"
