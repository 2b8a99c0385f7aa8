"""Numbers that reproduce (#15, #16): on a CPU, ShaSpec's rows are byte-identical across two runs, across a
kill and resume, with and without --deterministic, and with and without batch prefetching, at a budget
that crosses its full-modality warm-up (4/9 of the iterations) and its checkpoints; --deterministic sets
every flag it names and `configure` resets them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from conftest import run_killed_then_resumed
from missbench.cli import main
from missbench.core.execution import Execution
from missbench.engine.run import run
from missbench.experiment import registry
from missbench.experiment.protocol import load_protocol

#: 9 iterations: the warm-up ends at round(4/9 * 9) = 4; checkpoints at 3, 6 and 9.
BUDGET = {"iterations": 9, "patch": 16, "batch": 1, "checkpoint_every": 3, "log_every": 3,
          "dataset": {"size": 24, "n_train": 3, "n_val": 1, "n_test": 2}}


pytestmark = pytest.mark.usefixtures("default_flags")


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("protocol") / "determinism.yaml"
    path.write_text(f"inherit: {registry.protocol_path('non_dedicated')}\nbudgets: {{determinism: {json.dumps(BUDGET)}}}\n")
    spec = load_protocol(path).expand(["shaspec"], registry.dataset_class("brats_synthetic"), {}, "determinism")[0]
    warmup = round(registry.method_class("shaspec").training_for("segmentation").warmup_fraction * BUDGET["iterations"])
    assert 0 < warmup < BUDGET["checkpoint_every"] * 2 < BUDGET["iterations"]  # the kill below resumes past the warm-up
    return spec


def rows_bytes(sweep: Path, spec) -> bytes:
    return (sweep / spec.run_id / "rows.parquet").read_bytes()


def test_shaspec_reruns_and_resumes_to_byte_identical_rows(spec, tmp_path, monkeypatch):
    exe = Execution(progress=False, deterministic=True, prefetch=True)
    whole, resumed = run_killed_then_resumed(spec, tmp_path, monkeypatch, exe, checkpoint=6)
    assert "resumed from" in (resumed / "log.txt").read_text()
    assert run(spec, tmp_path / "again", exe) == "done"
    assert rows_bytes(tmp_path / "a", spec) == rows_bytes(tmp_path / "b", spec) == rows_bytes(tmp_path / "again", spec)
    meta = json.loads((whole / "meta.json").read_text())
    assert meta["execution"]["deterministic"] is True and meta["execution"]["prefetch"] is True


def test_prefetching_and_determinism_change_no_number(spec, tmp_path):
    run(spec, tmp_path / "prefetch", Execution(progress=False, prefetch=True))
    run(spec, tmp_path / "serial", Execution(progress=False, prefetch=False, deterministic=True))
    assert rows_bytes(tmp_path / "prefetch", spec) == rows_bytes(tmp_path / "serial", spec)


def test_deterministic_sets_torch_cudnn_and_the_cublas_workspace(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    Execution(deterministic=True).configure()
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    Execution(cudnn_benchmark=True).configure()  # the next execution in the process does not inherit it
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    assert torch.backends.cudnn.benchmark


def test_deterministic_refuses_a_cublas_workspace_that_is_not(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0")
    with pytest.raises(ValueError, match="CUBLAS_WORKSPACE_CONFIG"):
        Execution(deterministic=True).configure()


def test_contradictory_options_are_a_usage_error(tmp_path, capsys):
    smoke = ["--budget", "smoke", "--methods", "zero_fill", "--no-progress", "--threads", "1", "--out", str(tmp_path)]
    assert main([*smoke, "--deterministic", "--cudnn-benchmark"]) == 2
    assert "not deterministic" in capsys.readouterr().err
    assert main([*smoke, "--cuda-graphs"]) == 2
    assert "--compile" in capsys.readouterr().err
