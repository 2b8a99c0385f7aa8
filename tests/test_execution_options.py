"""Execution options of #8: --profile writes a phase breakdown, --compile and --amp run and are recorded."""

import json

import pandas as pd
import pytest
import torch

from conftest import smoke_spec
from missbench.cli import main
from missbench.cli.run import resolve_amp
from missbench.core.execution import PhaseTimer
from missbench.engine.run import run
from missbench.core.execution import Execution
from missbench.store.run_folder import ModelFolder

SMOKE = ["--protocol", "non_dedicated", "--budget", "smoke", "--no-progress"]


def test_profile_breaks_training_and_evaluation_into_phases(tmp_path):
    assert main([*SMOKE, "--methods", "shaspec", "--out", str(tmp_path), "--profile"]) == 0
    run_dir = next(p for p in tmp_path.iterdir() if p.name.startswith("shaspec_"))
    (score,) = ModelFolder(run_dir).scores()
    train, evaluate = ModelFolder(run_dir).profile()["train"], score.profile()["evaluate"]  # the model's part, the score's
    assert {"data_wait", "forward", "backward", "optimiser", "checkpoint", "other"} <= set(train)
    assert train["forward"]["calls"] == train["backward"]["calls"] == 4  # the smoke budget's iterations
    assert {"encode", "decode", "metric", "other"} <= set(evaluate)  # ShaSpec shares its encoders across subsets
    for part in (train, evaluate):
        assert sum(v["share"] for v in part.values()) == pytest.approx(1.0, abs=0.01)
    assert json.loads((run_dir / "meta.json").read_text())["execution"]["profile"] is True


def test_profile_off_times_nothing():
    timer = PhaseTimer(enabled=False)
    with timer.phase("forward"):
        pass
    assert timer.summary(2.0) == {"other": {"seconds": 2.0, "calls": 0, "share": 1.0}}


def test_compiled_forward_gives_the_rows_of_the_eager_one(tmp_path):
    spec = smoke_spec("zero_fill")
    run(spec, tmp_path / "eager", Execution(progress=False))
    run(spec, tmp_path / "compiled", Execution(progress=False, compile="eager"))
    a, b = (pd.read_parquet(tmp_path / d / spec.run_id / "rows.parquet") for d in ("eager", "compiled"))
    pd.testing.assert_frame_equal(a, b)
    meta = json.loads((tmp_path / "compiled" / spec.run_id / "meta.json").read_text())
    assert meta["execution"]["compile"] == "eager"


def test_bf16_autocast_runs_and_is_recorded(tmp_path):
    # 32^3 patches: torch 2.13's CPU bf16 backward of a 3x3x3 convolution over a 2x2x2 input (zero_fill's
    # deepest level at 16^3) sometimes returns NaN gradients on this machine's CPU.
    spec = smoke_spec("zero_fill")
    spec = spec.with_budget(patch=(32, 32, 32))
    assert run(spec, tmp_path, Execution(progress=False, amp="bf16")) == "done"
    rows = pd.read_parquet(tmp_path / spec.run_id / "rows.parquet")
    assert rows.value[rows.metric == "dice"].between(0, 1).all()
    assert json.loads((tmp_path / spec.run_id / "meta.json").read_text())["execution"]["amp"] == "bf16"


def test_prefetching_is_on_by_default_on_a_gpu_only():
    """On a CPU the drawing thread takes cores from the step it would hide (ShaSpec's step 1.26x slower on 2 cores)."""
    assert Execution().prefetch is False and Execution("cuda").prefetch is True and Execution("cuda:1").prefetch is True
    assert Execution(prefetch=True).prefetch is True and Execution("cuda", prefetch=False).prefetch is False
    with pytest.raises(ValueError, match="prefetch='yes'"):
        Execution(prefetch="yes")


def test_amp_auto_is_off_on_cpu():
    assert resolve_amp("auto", "cpu") == "off"
    assert resolve_amp("bf16", "cpu") == "bf16"


def test_gpu_step_flags_reach_meta_json(tmp_path, default_flags):
    assert main([*SMOKE, "--methods", "zero_fill", "--threads", "1", "--out", str(tmp_path), "--tf32", "--fused-optimizer",
                 "--deterministic", "--prefetch"]) == 0
    run_dir = next(p for p in tmp_path.iterdir() if p.name.startswith("zero_fill"))
    execution = json.loads((run_dir / "meta.json").read_text())["execution"]
    assert {k: execution[k] for k in ("tf32", "fused_optimizer", "deterministic", "prefetch", "cudnn_benchmark", "cuda_graphs")} == {
        "tf32": True, "fused_optimizer": True, "deterministic": True, "prefetch": True, "cudnn_benchmark": False, "cuda_graphs": False}


def test_configure_sets_every_flag_on_or_off(default_flags):
    Execution(tf32=True, cudnn_benchmark=True).configure()
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32 and torch.backends.cudnn.benchmark
    Execution().configure()  # IEEE float32 on CUDA, no autotuning: an earlier run's flags do not carry over
    assert not (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32 or torch.backends.cudnn.benchmark)


def test_cuda_graphs_compile_in_reduce_overhead_mode(monkeypatch, default_flags):
    calls = []
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *args, **kwargs: self)  # no GPU here
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: calls.append(kwargs))
    for graphs in (False, True):
        Execution(device="cuda", compile="inductor", cuda_graphs=graphs).place(torch.nn.Conv3d(1, 1, 1), volumes=True)
    assert calls == [{"backend": "inductor"}, {"backend": "inductor", "mode": "reduce-overhead"}]
    with pytest.raises(ValueError, match="--compile"):
        Execution(device="cuda", compile="eager", cuda_graphs=True)


def test_a_compiled_forward_that_reads_its_iteration_does_not_recompile_every_iteration():
    """RFNet reads its iteration in forward (the fusion start): as a constant it recompiled at every iteration
    until dynamo's limit, then ran eagerly, so a compiled timing measured recompilation."""
    from torch._dynamo.utils import counters

    class Staged(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear, self.step, self.total_steps = torch.nn.Linear(4, 4), 0, 20

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x) * (0.0 if self.step < 0.5 * self.total_steps else 1.0)

    torch._dynamo.reset()
    counters.clear()
    module = Execution(compile="eager").place(Staged(), volumes=False)
    for step in range(20):
        module.step = step
        module(torch.ones(2, 4))
    assert counters["stats"]["unique_graphs"] <= 3  # the first call, then symbolic, then the branch flip
    torch._dynamo.reset()


def test_threads_follow_the_cores_the_process_may_use(tmp_path, monkeypatch, capsys):
    """A job limited (cgroups, taskset, SLURM) to fewer cores than the machine has runs that many threads, refuses
    more, and records both in meta.json."""
    from missbench.core.execution import available_cores, set_threads
    from missbench.experiment.validate import Invalid, check_options
    from missbench.store.run_folder import sweep_models

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert available_cores() == 1 and set_threads(None) == 1 and torch.get_num_threads() == 1
    with pytest.raises(Invalid, match=r"--threads=2: expected an integer in \[1, 1\] \(the cores this process may use"):
        check_options({"threads": 2})
    check_options({"threads": 2}, here=False)  # SLURM: the nodes' cores, not this host's
    assert main([*SMOKE, "--methods", "zero_fill", "--out", str(tmp_path / "s")]) == 0
    (model,) = sweep_models(tmp_path / "s")
    meta = model.meta()
    assert meta["cores_available"] == 1 and meta["torch_threads"] == 1 and meta["cpu_cores"] >= 1
    assert meta["omp_wait_policy"] == "PASSIVE"  # bench.py's default: waiting threads sleep instead of spinning
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert available_cores() == 4
