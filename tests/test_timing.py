"""The timing protocol (missbench/engine/timing.py): rows and meta of a timing run, the shared-device flag,
protocol validation, and the timing table built from such a store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from missbench.experiment import registry
from missbench.experiment.protocol import ProtocolError, load_protocol
from missbench.store.run_folder import load_rows
from missbench.engine.timing import shared_device

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COUNTS = {"warmup": 1, "iterations": 3, "inference_warmup": 1, "inference_passes": 2}


def tiny_timing_protocol(tmp_path: Path, **counts: int) -> Path:
    """protocols/timing.yaml with smaller counts, as a file of its own."""
    path = tmp_path / "timing.yaml"
    path.write_text(f"inherit: {registry.protocol_path('timing')}\ntiming: {json.dumps({**COUNTS, **counts})}\n")
    return path


@pytest.fixture(scope="module")
def timing_store(tmp_path_factory) -> Path:
    from missbench.cli import main

    tmp = tmp_path_factory.mktemp("timing")
    out = tmp / "store"
    assert main(["--protocol", str(tiny_timing_protocol(tmp)), "--budget", "smoke", "--methods", "zero_fill,mean_fill",
                 "--no-progress", "--threads", "1", "--out", str(out)]) == 0
    return out


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


def test_timing_meta_records_counts_timer_load_and_the_flag(timing_store):
    run_dir = next(p for p in timing_store.iterdir() if p.name.startswith("zero_fill"))
    t = json.loads((run_dir / "meta.json").read_text())["timing"]
    assert {k: t[k] for k in COUNTS} == COUNTS
    assert t["timer"] == "perf_counter" and isinstance(t["shared_device"], bool)
    assert {"loadavg_1min", "cores"} <= set(t["load_before"]) and t["train_s_per_iter_median"] > 0
    assert 0 <= t["data_wait_share"] < 1  # the loop's wait for its batches over the timed iterations' wall time


def test_counts_are_part_of_the_run_id(tmp_path):
    proto = load_protocol(tiny_timing_protocol(tmp_path))
    ds = registry.dataset_class("brats_synthetic")
    a = proto.expand(["zero_fill"], ds, {}, "smoke")
    assert len(a) == 1 and a[0].train_subset is None and a[0].metric["timing"] == COUNTS
    (tmp_path / "b").mkdir()
    b = load_protocol(tiny_timing_protocol(tmp_path / "b", iterations=4)).expand(["zero_fill"], ds, {}, "smoke")
    assert a[0].run_id != b[0].run_id


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
