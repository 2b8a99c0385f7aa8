"""bench.py end to end on the smoke budget: rows, rerun skipping, resume, errors."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import CHECKOUT, run_killed_then_resumed, smoke_spec
from missbench.experiment import registry
from missbench.cli import main
from missbench.experiment.protocol import load_protocol
from missbench.store.run_folder import ModelFolder, load_rows

SMOKE = ["--protocol", "non_dedicated", "--budget", "smoke", "--no-progress"]


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    assert main([*SMOKE, "--methods", "shaspec,zero_fill", "--out", str(out)]) == 0
    return out


def test_smoke_run_has_rows_for_every_subset_and_region(smoke_sweep):
    rows = load_rows(smoke_sweep)
    assert set(rows.method) == {"shaspec", "zero_fill"}
    for _, per_method in rows.groupby("method"):
        counts = per_method.groupby(["eval_subset", "region", "metric"]).size()
        assert len(counts) == 15 * 4 * 2  # subsets x (ET, ETpp, TC, WT) x (dice, hd95)
        assert (counts == 2).all()  # both test cases in every cell
    assert rows.value[rows.metric == "dice"].between(0, 1).all()
    assert set(rows.empty_policy) == {"one"} and set(rows.et_threshold) == {50}
    # every row says how it was scored: HD95 definition and sliding windows
    assert set(rows.hd95_definition) == {"pooled"} and set(rows.window_overlap) == {0.5} and set(rows.window_weighting) == {"uniform"}


def test_model_and_score_folders_hold_spec_meta_and_provenance(smoke_sweep):
    run_dir = next(p for p in smoke_sweep.iterdir() if p.name.startswith("shaspec_"))
    assert {"model.json", "request.json", "meta.json", "log.txt", "checkpoint.pt", "DONE"} <= {p.name for p in run_dir.iterdir()}
    (score,) = ModelFolder(run_dir).scores()
    assert {"score.json", "rows.parquet", "meta.json", "DONE"} <= {p.name for p in score.path.iterdir()}
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["model"] == json.loads((run_dir / "model.json").read_text()) and meta["model_id"] == run_dir.name
    assert score.meta()["score"] == json.loads(score.file("score.json").read_text()) and score.meta()["model_id"] == run_dir.name
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0] or meta["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert {"git_sha", "git_dirty", "git_untracked_plugins", "device", "timings", "memory", "parameters", "derived_seed"} <= set(meta)
    # what CPU floats depend on: the model, the instruction set torch dispatched to, the installed packages
    assert meta["device_name"] == meta["cpu"] and meta["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert "distributions, sha256 " in meta["versions"]["installed"]
    files = ("methods/shaspec.py", "datasets/brats_synthetic.py", "protocols/non_dedicated.yaml")
    assert meta["plugin_files"] == {f: hashlib.sha256((CHECKOUT / f).read_bytes()).hexdigest() for f in files}


def test_rerun_skips_finished_runs(smoke_sweep, capsys):
    before = {p: p.stat().st_mtime_ns for p in smoke_sweep.rglob("rows.parquet")}
    assert main([*SMOKE, "--methods", "shaspec,zero_fill", "--out", str(smoke_sweep)]) == 0
    out = capsys.readouterr().out
    assert out.count(": skipped") == 2
    assert "FLAIR+T1+T1c+T2" in out and "Avg" in out
    assert before == {p: p.stat().st_mtime_ns for p in smoke_sweep.rglob("rows.parquet")}


def test_dry_run_lists_runs_and_writes_nothing(tmp_path, capsys):
    assert main([*SMOKE, "--methods", "shaspec,zero_fill", "--seeds", "0,1", "--out", str(tmp_path / "s"), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("[train]") == 4
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "shaspec,nosuch"], "unknown method 'nosuch'; valid: "),
        (["--methods", "shaspec", "--dataset", "nosuch"], "unknown dataset 'nosuch'; valid: avmnist, avmnist_synthetic, "),
        (["--methods", "shaspec", "--protocol", "nosuch"], "unknown protocol 'nosuch'; valid: alpha_beta, audio_rate, "),
        (["--methods", "shaspec", "--budget", "nosuch"], "unknown budget 'nosuch'; valid: smoke, default, paper"),
        (["--methods", "shaspec", "--param", "shaspec.dao=l2"], "dao='l2'"),
        (["--methods", "rfnet", "--protocol", "audio_rate"], "--methods: rfnet does not support task 'classification'"),
        (["--methods", "rfnet", "--protocol", "audio_rate", "--dry-run"], "--methods: rfnet does not support task 'classification'"),
    ],
)
def test_unknown_names_get_one_line_and_exit_2(tmp_path, capsys, args, message):
    assert main([*SMOKE[2:], *args, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_bench_script_exit_status_and_list():
    bad = subprocess.run([sys.executable, "bench.py", "--methods", "nosuch"], cwd=CHECKOUT, capture_output=True, text=True)
    assert bad.returncode == 2 and "valid: " in bad.stderr and "shaspec" in bad.stderr
    listing = subprocess.run([sys.executable, "bench.py", "list"], cwd=CHECKOUT, capture_output=True, text=True, check=True).stdout
    assert "shaspec" in listing and "zero_fill" in listing and "brats_synthetic" in listing and "non_dedicated" in listing


def test_killed_run_resumes_from_its_checkpoint_with_the_same_numbers(tmp_path, monkeypatch):
    whole, resumed = run_killed_then_resumed(smoke_spec("zero_fill"), tmp_path, monkeypatch)
    assert "resumed from" in (resumed / "log.txt").read_text()
    pd.testing.assert_frame_equal(load_rows(whole.parent), load_rows(resumed.parent))


def test_make_tables_writes_the_dice_table_from_the_store(smoke_sweep, tmp_path):
    out = subprocess.run([sys.executable, "analysis/make_tables.py", str(smoke_sweep), "--out", str(tmp_path)],
                         cwd=CHECKOUT, capture_output=True, text=True, check=True).stdout
    assert "Avg" in out
    table = pd.read_csv(tmp_path / "dice_non_dedicated_brats_synthetic_smoke.csv", header=[0, 1], index_col=0)
    assert list(table.index) == [*proto_subsets(), "Avg"]
    assert set(table.columns.get_level_values(0)) == {"ET", "TC", "WT"}
    rows = load_rows(smoke_sweep)
    cell = rows[(rows.variant == "shaspec") & (rows.region == "WT") & (rows.metric == "dice") & (rows.eval_subset == "T1")]
    assert table.loc["T1", ("WT", "shaspec")] == pytest.approx(100 * cell.value.mean(), abs=0.01)
    assert table.loc["Avg", ("WT", "shaspec")] == pytest.approx(table.iloc[:-1][("WT", "shaspec")].mean(), abs=0.01)


def proto_subsets():
    return list(load_protocol(registry.protocol_path("non_dedicated")).subsets)


def test_backbone_common_reaches_every_method_that_has_one(tmp_path, capsys):
    args = [*SMOKE, "--methods", "shaspec,hemis,rfnet,zero_fill", "--backbone", "common", "--out", str(tmp_path), "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "hemis {'backbone': 'common'}" in out and "rfnet {'backbone': 'common'}" in out
    assert "shaspec  train=" in out  # ShaSpec's default backbone is already the common one
    assert "zero_fill  train=" in out


def test_the_missbench_command_is_python_bench_py():
    """pyproject.toml's console entry point runs the same main as bench.py."""
    import shutil

    command = shutil.which("missbench", path=str(Path(sys.executable).parent))
    if command is None:
        pytest.skip("the package is not installed in this interpreter's environment (pip install -e .)")
    ours = subprocess.run([command, "list", "--protocols"], cwd=CHECKOUT, capture_output=True, text=True)
    script = subprocess.run([sys.executable, "bench.py", "list", "--protocols"], cwd=CHECKOUT, capture_output=True, text=True)
    assert ours.returncode == script.returncode == 0 and ours.stdout == script.stdout and "non_dedicated" in ours.stdout
    assert subprocess.run([command, "--methods", "nosuch"], cwd=CHECKOUT, capture_output=True, text=True).returncode == 2
