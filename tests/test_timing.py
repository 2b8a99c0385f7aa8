"""The timing protocol (missbench/engine/timing.py): rows and meta of a timing run, the shared-device flag,
protocol validation, and the timing table built from such a store."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import bench_here
from missbench.experiment import registry
from missbench.experiment.protocol import ProtocolError, load_protocol
from missbench.store.run_folder import load_rows
from missbench.engine.timing import shared_device

#: Each count differs from protocols/timing.yaml's (5, 30, 1, 5), so a run that read the shipped counts shows it.
COUNTS = {"warmup": 1, "iterations": 3, "inference_warmup": 0, "inference_passes": 2}
SHIPPED = {"warmup": 5, "iterations": 30, "inference_warmup": 1, "inference_passes": 5}


def tiny_timing_protocol(tmp_path: Path, **counts: int) -> Path:
    """protocols/timing.yaml with smaller counts, as a file of its own."""
    path = tmp_path / "timing.yaml"
    path.write_text(f"inherit: {registry.protocol_path('timing')}\ntiming: {json.dumps({**COUNTS, **counts})}\n")
    return path


@pytest.fixture(scope="module")
def timing_sweep(tmp_path_factory) -> tuple[Path, str, str]:
    """A timing sweep through bench.py's main, as `bench.py --protocol timing ... --device cpu`: its store, stdout and stderr."""
    tmp = tmp_path_factory.mktemp("timing")
    out = tmp / "store"
    done = bench_here("--protocol", str(tiny_timing_protocol(tmp)), "--budget", "smoke", "--methods", "zero_fill,mean_fill",
                      "--device", "cpu", "--no-progress", "--threads", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out, done.stdout, done.stderr


@pytest.fixture(scope="module")
def timing_store(timing_sweep) -> Path:
    return timing_sweep[0]


def test_timing_run_writes_one_row_per_timed_iteration_and_pass(timing_store):
    rows = load_rows(timing_store)
    assert set(rows["mode"]) == {"timing"} and set(rows.method) == {"zero_fill", "mean_fill"}
    for _, g in rows.groupby("method"):
        counts = g.metric.value_counts().to_dict()
        assert counts == {"train_s_per_iter": 3, "infer_s_per_case": 2, "peak_mem_mib": 2, "parameters": 1}
        assert (g[g.metric.str.endswith(("iter", "case"))].value > 0).all()
        assert set(g[g.metric == "peak_mem_mib"].region) == {"train", "infer"}
        assert set(g.memory_kind) == {"peak_rss_above_phase_start_mib"}  # CPU: the phase's own peak resident memory
    zero = rows[(rows.method == "zero_fill") & (rows.metric == "parameters")].value.iloc[0]
    assert zero == 316_587


def test_each_model_is_measured_in_a_fresh_process(timing_sweep):
    """Its peak memory then does not depend on the methods measured before it in the same process."""
    store, console, _ = timing_sweep
    metas = [json.loads((p / "meta.json").read_text()) for p in store.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(metas) == 2 and {m["executor"] for m in metas} == {"local"} and "measured in a fresh process" in console


def test_timing_meta_records_counts_timer_load_and_the_flag(timing_store):
    run_dir = next(p for p in timing_store.iterdir() if p.name.startswith("zero_fill"))
    t = json.loads((run_dir / "meta.json").read_text())["timing"]
    # the override's counts, not the shipped file's, and those the run really timed (its rows, counted)
    assert {k: t[k] for k in SHIPPED} == {"warmup": 1, "iterations": 3, "inference_warmup": 0, "inference_passes": 2}
    rows = load_rows(timing_store)
    timed = rows[rows.method == "zero_fill"].metric.value_counts()
    assert (timed["train_s_per_iter"], timed["infer_s_per_case"]) == (t["iterations"], t["inference_passes"])
    assert t["timer"] == "perf_counter" and isinstance(t["shared_device"], bool)
    assert {"loadavg_1min", "cores"} <= set(t["load_before"]) and t["train_s_per_iter_median"] > 0
    assert 0 <= t["data_wait_share"] < 1  # the loop's wait for its batches over the timed iterations' wall time


def test_counts_are_part_of_the_model_id(tmp_path):
    ds = registry.dataset_class("brats_synthetic")
    shipped = load_protocol(registry.protocol_path("timing")).expand(["zero_fill"], ds, {}, "smoke")
    assert {k: shipped[0].model.timing[k] for k in SHIPPED} == {"warmup": 5, "iterations": 30, "inference_warmup": 1, "inference_passes": 5}
    a = load_protocol(tiny_timing_protocol(tmp_path)).expand(["zero_fill"], ds, {}, "smoke")
    assert len(a) == 1 and a[0].model.train_subset is None
    assert {k: a[0].model.timing[k] for k in SHIPPED} == {"warmup": 1, "iterations": 3, "inference_warmup": 0, "inference_passes": 2}
    ids = {a[0].model.model_id, shipped[0].model.model_id}
    for key in SHIPPED:  # each count alone moves the model id
        (tmp_path / key).mkdir()
        (b,) = load_protocol(tiny_timing_protocol(tmp_path / key, **{key: COUNTS[key] + 1})).expand(["zero_fill"], ds, {}, "smoke")
        assert b.model.timing[key] == COUNTS[key] + 1
        ids.add(b.model.model_id)
    assert len(ids) == 2 + len(SHIPPED)


def test_timing_on_a_classification_data_set(tmp_path):
    from missbench.cli import main

    assert main(["--protocol", str(tiny_timing_protocol(tmp_path)), "--dataset", "avmnist_synthetic", "--budget", "smoke",
                 "--methods", "zero_fill", "--no-progress", "--threads", "1", "--out", str(tmp_path / "s")]) == 0
    rows = load_rows(tmp_path / "s")
    assert rows.metric.value_counts().to_dict() == {"train_s_per_iter": 3, "infer_s_per_case": 2, "peak_mem_mib": 2, "parameters": 1}
    assert set(rows.eval_subset) == {"image+audio"}


def test_shared_device_flag():
    idle = {"loadavg_1min": 0.1, "cores": 4.0}
    assert not shared_device(idle, {"loadavg_1min": 2.0, "cores": 4.0}, own_threads=2)
    assert shared_device({"loadavg_1min": 3.5, "cores": 4.0}, idle, own_threads=2)  # others were busy before
    assert shared_device(idle, {"loadavg_1min": 6.0, "cores": 4.0}, own_threads=2)  # others started meanwhile


def test_a_run_alone_on_a_gpu_is_not_flagged_for_its_own_cuda_context():
    """The H200 run flagged every timing run: its own 500-770 MiB CUDA context counted as other processes' memory."""
    idle = {"loadavg_1min": 0.1, "cores": 16.0}
    alone = idle | {"gpu_mib_unexplained": 770.0, "gpu_processes": 1}
    assert not shared_device(alone, alone, own_threads=1)
    assert shared_device(alone, idle | {"gpu_mib_unexplained": 9000.0, "gpu_processes": 2}, own_threads=1)
    # without NVML's process count: memory beyond the allocator's and a context's is someone else's
    assert not shared_device(idle | {"gpu_mib_unexplained": 770.0, "gpu_processes": None}, idle, own_threads=1)
    assert shared_device(idle | {"gpu_mib_unexplained": 6000.0, "gpu_processes": None}, idle, own_threads=1)


def test_nvml_that_sees_no_process_cannot_count():
    """A container's NVML may list no process at all, not even this run's: then the memory rule decides."""
    idle = {"loadavg_1min": 0.1, "cores": 16.0}
    assert shared_device(idle | {"gpu_mib_unexplained": 6000.0, "gpu_processes": 0}, idle, own_threads=1)
    assert not shared_device(idle | {"gpu_mib_unexplained": 770.0, "gpu_processes": 0}, idle, own_threads=1)


def test_a_timing_sweep_through_bench_py_exits_0_with_the_timing_table(timing_sweep):
    """The H200 run: `bench.py --protocol timing` finished every run, then exited 1 printing an (empty) Dice summary
    (the fixture asserts the exit status)."""
    _, console, errors = timing_sweep
    header = next(line for line in console.splitlines() if line.startswith("method "))
    assert "train s/iter" in header and "infer s/case" in header and "train peak MiB" in header
    assert "zero_fill" in console and "Dice" not in console and "Traceback" not in errors


def test_timing_protocol_needs_its_counts(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text(f"inherit: {registry.protocol_path('non_dedicated')}\nmode: timing\n")
    with pytest.raises(ProtocolError, match="timing.warmup"):
        load_protocol(bad)
    bad.write_text(f"inherit: {registry.protocol_path('timing')}\ntiming: {{warmup: 1, iterations: x}}\n")
    with pytest.raises(ProtocolError, match="iterations"):
        load_protocol(bad)


def test_timing_table_from_the_store(timing_store, tmp_path):
    from analysis.make_tables import main

    assert main([str(timing_store), "--out", str(tmp_path), "--no-figures"]) == 0
    table = pd.read_csv(tmp_path / "timing_brats_synthetic_smoke.csv", index_col=0)
    assert list(table.index) == ["mean_fill", "zero_fill"]
    rows = load_rows(timing_store)
    z = rows[(rows.method == "zero_fill") & (rows.metric == "train_s_per_iter")].value
    assert table.loc["zero_fill", "train s/iter"] == pytest.approx(z.median(), abs=1e-4)
    md = (tmp_path / "timing_brats_synthetic_smoke.md").read_text()
    assert "RSS above the phase's start, per phase" in md and "3 timed training iterations" in md
    # per-phase memory on CPU: the phase columns hold it, the lifetime column stays empty
    mem = rows[(rows.method == "zero_fill") & (rows.metric == "peak_mem_mib")]
    assert table.loc["zero_fill", "train peak MiB"] == pytest.approx(mem[mem.region == "train"].value.iloc[0], abs=1e-3)
    assert table.loc["zero_fill", "infer peak MiB"] == pytest.approx(mem[mem.region == "infer"].value.iloc[0], abs=1e-3)
    assert pd.isna(table.loc["zero_fill", "lifetime peak MiB"])


def test_the_timed_step_runs_under_every_execution_option(tmp_path, monkeypatch, default_flags):
    """The H200 run: timing applied neither --amp bf16 nor --compile to training (bf16's step equalled fp32's).
    The timed step must train the method the run skeleton placed and compiled, on inputs in its memory
    format, under its autocast, with its optimiser and backend flags."""
    import torch

    from missbench.core.execution import Execution
    from missbench.engine import timing
    from missbench.engine.run import run

    compiled, seen = [], []
    compile_module = torch.nn.Module.compile

    def spy_compile(self, *args, **kwargs):
        compiled.append(self)
        return compile_module(self, *args, **kwargs)

    step = timing.train_step

    def spy_step(method, optimizer, x, y, available, exe, phases, before_update=None):
        inside = {}
        handle = method.register_forward_pre_hook(lambda m, args: inside.update(autocast=torch.get_autocast_dtype("cpu")
                                                                                if torch.is_autocast_enabled("cpu") else None))
        try:
            out = step(method, optimizer, x, y, available, exe, phases, before_update)
        finally:
            handle.remove()
        convs = [m.weight for m in method.modules() if isinstance(m, torch.nn.Conv3d)]
        seen.append({**inside, "compiled": any(m is method for m in compiled), "fused": optimizer.defaults["fused"],
                     "channels_last": x.is_contiguous(memory_format=torch.channels_last_3d)
                     and all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in convs),
                     "deterministic": torch.are_deterministic_algorithms_enabled(),
                     "tf32": torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32})
        return out

    monkeypatch.setattr(torch.nn.Module, "compile", spy_compile)
    monkeypatch.setattr(timing, "train_step", spy_step)
    # 32^3 patches: at 16^3 zero_fill's deepest 3x3x3 convolution sees 2^3 voxels, where torch 2.13's CPU bf16
    # convolution backward returns NaN weight gradients in about 2% of calls (AMD EPYC with avx512_bf16).
    path = tiny_timing_protocol(tmp_path)
    path.write_text(path.read_text() + "budgets: {smoke: {patch: 32, dataset: {size: 32}}}\n")
    spec = load_protocol(path).expand(["zero_fill"], registry.dataset_class("brats_synthetic"), {}, "smoke")[0]
    exe = Execution(progress=False, amp="bf16", compile="eager", tf32=True, fused_optimizer=True, deterministic=True)
    assert run(spec, tmp_path / "s", exe) == "done"
    assert len(seen) == COUNTS["warmup"] + COUNTS["iterations"]
    assert all(s == {"autocast": torch.bfloat16, "compiled": True, "fused": True, "channels_last": True, "deterministic": True,
                     "tf32": True} for s in seen), seen[0]
