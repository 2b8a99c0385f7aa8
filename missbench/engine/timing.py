"""The timing protocol (``mode: timing``, protocols/timing.yaml): what a training iteration and an
inference pass cost, per method, at the protocol's batch and patch on the chosen device.

One method at a time (the in-process executor runs specs in turn): ``warmup`` untimed then
``iterations`` timed training iterations (forward, backward, optimiser step; sampling the batch is
not timed), then ``inference_warmup`` untimed and ``inference_passes`` timed inference passes
(segmentation: sliding-window prediction of one test case with every modality; classification: one
batch of test samples). Each timed region is bracketed by device synchronisation: CUDA events on a
GPU, ``time.perf_counter`` on a CPU (harness.md §5.4). Peak memory: ``torch.cuda.max_memory_allocated``
per phase on a GPU; on a CPU the process's peak RSS (lifetime, not per phase), labelled as such.
The load on the machine is recorded before and after; a run that shared its device is flagged
(``shared_device`` in meta.json), since such timings are not comparable.

Rows (rows.parquet, as any run): metric ``train_s_per_iter`` and ``infer_s_per_case`` (one row per
timed iteration or pass), ``peak_mem_mib`` (region = phase, ``memory_kind`` names the measure) and
``parameters``. ShaSpec §4.5 compares methods this way (batch 4, mean of 30 iterations, one GPU).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from missbench.store import provenance
from missbench.experiment import registry
from missbench.core.dataset import ClassificationDataset
from missbench.core.availability import draw_available
from missbench.engine.evaluate import predict_case, subset_predictor
from missbench.core.availability import zero_inputs
from missbench.core.method import Method, count_parameters
from missbench.engine.run import build, classification_data, open_run_dir
from missbench.experiment.spec import Execution, RunSpec
from missbench.store.run_folder import DONE, is_done, write_atomic, write_json, write_rows
from missbench.core.subsets import Subset
from missbench.engine.train import batch_sources, make_optimizer

#: GPU memory (MiB) held by other processes above which a GPU counts as shared.
SHARED_GPU_MIB = 256.0


def timer(device: torch.device) -> Callable[[Callable[[], Any]], float]:
    """A function that runs ``fn`` once and returns its wall time in seconds, device-synchronised."""
    if device.type == "cuda":
        def timed(fn: Callable[[], Any]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end) / 1000.0
    else:
        def timed(fn: Callable[[], Any]) -> float:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
    return timed


def device_load(device: torch.device) -> dict[str, float]:
    """The machine's 1-minute load average, its usable cores and, on a GPU, memory held by other processes."""
    out = {"loadavg_1min": os.getloadavg()[0], "cores": float(len(os.sched_getaffinity(0)))}
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        out["gpu_mib_used_by_others"] = max(0.0, (total - free - torch.cuda.memory_reserved(device)) / 2**20)
    return out


def shared_device(before: dict[str, float], after: dict[str, float], own_threads: int) -> bool:
    """True when other work competed for the device: the load of others (the load before the run, or after
    it less this run's threads) plus this run's threads exceeds the cores, or others hold GPU memory."""
    others = max(before["loadavg_1min"], after["loadavg_1min"] - own_threads)
    gpu = max(before.get("gpu_mib_used_by_others", 0.0), after.get("gpu_mib_used_by_others", 0.0))
    return others + own_threads > before["cores"] or gpu > SHARED_GPU_MIB


def peak_memory(device: torch.device) -> tuple[str, float]:
    """(kind, MiB) of the peak memory so far: CUDA max allocated since the last reset, or peak process RSS."""
    ((kind, mib),) = provenance.peak_memory_mib(device).items()
    return (kind if device.type == "cuda" else "peak_process_rss_mib_lifetime"), mib


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def time_training(method: Method, spec: RunSpec, dataset: object, cfg: Any, exe: Execution, counts: dict[str, int]) -> list[float]:
    """Seconds of each timed training iteration after the warm-up (batches sampled outside the timed region)."""
    data = classification_data(dataset, spec) if isinstance(dataset, ClassificationDataset) else None
    train_data = data.samples["train"] if data else [dataset.load(c) for c in dataset.case_ids("train")]
    sample, _ = batch_sources(method, train_data, spec, None, data.masks["train"] if data else None,
                               np.random.default_rng(spec.derived_seed), exe)
    gen = torch.Generator().manual_seed(spec.derived_seed)
    optimizer = make_optimizer(method, cfg)
    timed, total = timer(exe.torch_device), counts["warmup"] + counts["iterations"]
    method.train()
    times = []
    for step in range(total):
        x, y, drawn = sample(step)
        available = drawn if drawn is not None else draw_available(cfg.dropout, spec.budget.batch, method.n_modalities, gen)
        x, y, available = exe.prepare(zero_inputs(x, available)), y.to(exe.device), available.to(exe.device)
        method.set_step(step, total)

        def step_fn() -> None:
            loss = sum(method(x, available, y).losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        t = timed(step_fn)
        if step >= counts["warmup"]:
            times.append(t)
    return times


def time_inference(method: Method, spec: RunSpec, dataset: object, exe: Execution, counts: dict[str, int]) -> list[float]:
    """Seconds of each timed inference pass with every modality present, after the warm-up."""
    full = Subset(tuple(method.modalities), tuple(method.modalities))
    predict = subset_predictor(method, [full])
    method.eval()
    if isinstance(dataset, ClassificationDataset):
        test = dataset.samples("test")
        idx = np.arange(min(spec.budget.batch, len(test.y)))
        x = exe.prepare([torch.from_numpy(a[idx]).float() for a in test.x])

        def fn() -> None:
            with torch.inference_mode():
                predict(x)
    else:
        case = dataset.load(dataset.case_ids("test")[0])

        def fn() -> None:
            predict_case(predict, method, case, spec, exe)

    timed = timer(exe.torch_device)
    times = [timed(fn) for _ in range(counts["inference_warmup"] + counts["inference_passes"])]
    return times[counts["inference_warmup"]:]


def run_timing(spec: RunSpec, sweep_dir: Any, exe: Execution = Execution(), force: bool = False) -> str:
    """Time one method (a ``mode: timing`` spec) into ``sweep_dir/<run_id>``; "done" or "skipped"."""
    run_dir = sweep_dir / spec.run_id
    if is_done(run_dir) and not force:
        return "skipped"
    counts = spec.metric["timing"]
    dev = exe.torch_device
    dataset, method = build(spec)
    cfg = type(method).training_for(dataset.task).replace(**spec.training)
    open_run_dir(spec, run_dir)
    volumes = exe.channels_last and dataset.task == "segmentation"  # 3-D convolutions only, as the runner
    method.to(dev, memory_format=torch.channels_last_3d if volumes else torch.contiguous_format)
    before = device_load(dev)
    reset_peak(dev)
    train_times = time_training(method, spec, dataset, cfg, exe, counts)
    train_mem = peak_memory(dev)
    reset_peak(dev)
    infer_times = time_inference(method, spec, dataset, exe, counts)
    infer_mem = peak_memory(dev)
    after = device_load(dev)
    shared = shared_device(before, after, torch.get_num_threads() if dev.type == "cpu" else 1)
    full = Subset(tuple(method.modalities), tuple(method.modalities))
    n_params = count_parameters(method)
    records = ([("train", f"iter{i}", "train_s_per_iter", t) for i, t in enumerate(train_times)]
               + [("infer", f"pass{i}", "infer_s_per_case", t) for i, t in enumerate(infer_times)]
               + [("train", "-", "peak_mem_mib", train_mem[1]), ("infer", "-", "peak_mem_mib", infer_mem[1]),
                  ("model", "-", "parameters", float(n_params))])
    frame = pd.DataFrame([{"case_id": c, "eval_subset": full.label, "eval_code": full.code, "n_available": len(full),
                           "region": phase, "metric": metric, "value": value} for phase, c, metric, value in records])
    for key, value in {
        "run_id": spec.run_id, "method": spec.method, "variant": spec.variant, "dataset": spec.dataset, "protocol": spec.protocol,
        "mode": spec.mode, "budget": spec.budget_name, "train_subset": "random", "seed": spec.seed, "split": "test",
        "empty_policy": spec.metric["empty"], "et_threshold": spec.metric["et_threshold"], "missing_rate": math.nan,
        "memory_kind": train_mem[0], "shared_device": shared,
    }.items():
        frame[key] = value
    write_rows(run_dir / "rows.parquet", frame)
    meta = {
        "run_id": spec.run_id, "spec": spec.to_dict(), "parameters": n_params, "method_params_resolved": method.params,
        "method_citation": type(method).citation, "training_config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "timing": {**counts, "timer": "cuda events" if dev.type == "cuda" else "perf_counter",
                   "train_s_per_iter_median": float(np.median(train_times)) if train_times else None,
                   "infer_s_per_case_median": float(np.median(infer_times)) if infer_times else None,
                   "memory": {"train": dict([train_mem]), "infer": dict([infer_mem])},
                   "load_before": before, "load_after": after, "shared_device": shared},
        "execution": {"device": exe.device, "channels_last": exe.channels_last, "window_batch": exe.window_batch},
        "versions": provenance.versions(), **provenance.git_state(registry.ROOT), **provenance.device_info(dev),
    }
    write_json(run_dir / "meta.json", meta)
    write_atomic(run_dir / DONE, b"")
    return "done"
