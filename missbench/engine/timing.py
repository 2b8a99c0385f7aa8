"""The timing body of the run skeleton (``mode: timing``, protocols/timing.yaml): what a training
iteration and an inference pass cost, per method, at the protocol's batch and patch on the chosen device.

One method at a time: ``warmup`` untimed then ``iterations`` timed training iterations (the trainer's
own `train_step`, optimiser and batch stream on the method the run skeleton placed and compiled, so
every execution option applies; taking the batch is not timed, but its wait is: meta.json's timing
``data_wait_share``), then
``inference_warmup`` untimed and ``inference_passes`` timed inference passes (the task's: sliding-window
prediction of one test case, or one batch of test samples, with every modality). Each timed region is
bracketed by device synchronisation: CUDA events on a GPU, ``time.perf_counter`` on a CPU
(CUDA runs asynchronously: PyTorch's "CUDA semantics" notes, pytorch.org/docs/stable/notes/cuda.html).
Peak memory per phase: ``torch.cuda.max_memory_allocated`` on a GPU (reset at the
phase's start); on a CPU the process's peak resident memory during the phase above its resident memory
at the phase's start (Linux resets the peak through /proc/self/clear_refs), so earlier work of the
same process is not counted. The load on the machine is recorded before and after; a run that shared
its device is flagged (`shared_device`), since such timings are not comparable.

Rows: metric ``train_s_per_iter`` and ``infer_s_per_case`` (one row per timed iteration or pass),
``peak_mem_mib`` (region = phase, ``memory_kind`` names the measure) and ``parameters``. ShaSpec §4.5
compares methods this way (batch 4, mean of 30 iterations, one GPU).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from missbench.core.execution import PhaseTimer
from missbench.core.method import count_parameters
from missbench.core.subsets import Subset
from missbench.engine.batches import BatchStream, SamplingRNG, draw_batch
from missbench.engine.context import Context, Outcome
from missbench.engine.train import make_optimizer, train_step

#: GPU memory (MiB) beyond this run's own that counts as held by others, when NVML cannot count processes.
CONTEXT_ALLOWANCE_MIB = 1536.0


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


def _gpu_processes(device: torch.device) -> int | None:
    """How many processes hold memory on the GPU (NVML), or None where NVML cannot tell."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        return len(pynvml.nvmlDeviceGetComputeRunningProcesses(handle))
    except Exception:  # noqa: BLE001 - no NVML library, no driver access, a container without process info
        return None


def device_load(device: torch.device) -> dict[str, float | None]:
    """The machine's 1-minute load average and usable cores; on a GPU, the processes on it (NVML) and the
    memory in use that this process's allocator does not hold (its own CUDA context included)."""
    out: dict[str, float | None] = {"loadavg_1min": os.getloadavg()[0], "cores": float(len(os.sched_getaffinity(0)))}
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        out["gpu_mib_unexplained"] = max(0.0, (total - free - torch.cuda.memory_reserved(device)) / 2**20)
        out["gpu_processes"] = _gpu_processes(device)
    return out


def shared_device(before: dict[str, Any], after: dict[str, Any], own_threads: int) -> bool:
    """True when other work competed for the device, from the readings alone.

    CPU: the load of others (the load before the run, or after it less this run's threads) plus this
    run's threads exceeds the cores. GPU: another process is on it (NVML counts more than one), or,
    where NVML cannot count (no NVML, or one that does not see even this run's process, as in some
    containers), more memory is in use than this process's allocator and its own CUDA context (up to
    `CONTEXT_ALLOWANCE_MIB`) explain.
    """
    others = max(before["loadavg_1min"], after["loadavg_1min"] - own_threads)
    if others + own_threads > before["cores"]:
        return True
    processes = [r.get("gpu_processes") for r in (before, after) if "gpu_processes" in r]
    if any(n is not None and n > 1 for n in processes):
        return True
    counted = any(processes)  # None or 0: NVML could not see this run's own process
    unexplained = max(before.get("gpu_mib_unexplained", 0.0) or 0.0, after.get("gpu_mib_unexplained", 0.0) or 0.0)
    return not counted and unexplained > CONTEXT_ALLOWANCE_MIB


def _rss_mib() -> tuple[float, float]:
    """(current, peak since the last reset) resident memory of this process in MiB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    return float(fields["VmRSS"].split()[0]) / 1024, float(fields["VmHWM"].split()[0]) / 1024


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident set size to the current one (Linux); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@contextmanager
def phase_memory(device: torch.device, out: dict[str, Any]) -> Iterator[None]:
    """Fill ``out`` with {"kind", "mib"}: the phase's peak memory, not counting the process's earlier work."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield
        out.update(kind="peak_cuda_allocated_mib", mib=torch.cuda.max_memory_allocated(device) / 2**20)
    elif _reset_peak_rss():
        start, _ = _rss_mib()
        yield
        out.update(kind="peak_rss_above_phase_start_mib", mib=max(0.0, _rss_mib()[1] - start))
    else:  # no /proc (not Linux): the lifetime peak, named so
        import resource

        yield
        out.update(kind="peak_process_rss_mib_lifetime", mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def time_training(ctx: Context, counts: dict[str, int]) -> tuple[list[float], float]:
    """Seconds of each timed training iteration after the warm-up, and the data wait share of the timed
    iterations: the time the loop waited for its batch (with prefetching, for the background thread
    to finish drawing it; then the copy to the device) over their wall time. Batches come from the
    trainer's `BatchStream` and are taken outside the timed region."""
    spec, method, task, exe, cfg, seed = ctx.spec, ctx.method, ctx.task, ctx.exe, ctx.cfg, ctx.model.derived_seed
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    batches = task.batches(task.split(ctx.dataset, "train"), spec.budget.batch, spec.budget.patch, rng, seed, ctx.masks["train"],
                           cfg.sampler)
    total = counts["warmup"] + counts["iterations"]
    stream = BatchStream(lambda k: draw_batch(batches, k, None, cfg, 0, gen, spec.budget.batch, method.n_modalities),
                         SamplingRNG(rng, gen), exe, total)
    optimizer = make_optimizer(method, cfg, exe)
    timed, phases = timer(exe.torch_device), ctx.timers["train"] if exe.profile else PhaseTimer()
    method.train()
    times, waited, wall = [], 0.0, 0.0
    with stream.running(0):
        for step in range(total):
            t0 = time.perf_counter()
            x, y, available = stream.take(step)
            wait = time.perf_counter() - t0
            method.set_step(step, total)
            t = timed(lambda: train_step(method, optimizer, x, y, available, exe, phases))
            if step >= counts["warmup"]:
                times.append(t)
                waited, wall = waited + wait, wall + time.perf_counter() - t0
    return times, waited / wall if wall else 0.0


def time_inference(ctx: Context, counts: dict[str, int]) -> list[float]:
    """Seconds of each timed inference pass with every modality present, after the warm-up."""
    ctx.method.eval()
    run_once = ctx.task.inference_pass(ctx.method, ctx.task.split(ctx.dataset, "test"), ctx.settings, ctx.exe, ctx.spec.budget.batch)
    timed = timer(ctx.exe.torch_device)
    times = [timed(run_once) for _ in range(counts["inference_warmup"] + counts["inference_passes"])]
    return times[counts["inference_warmup"]:]


def time_method(ctx: Context) -> Outcome:
    """The timing body: rows of per-iteration and per-pass seconds, per-phase peak memory and the parameter count."""
    counts, dev = ctx.model.timing, ctx.exe.torch_device
    before = device_load(dev)
    train_mem: dict[str, Any] = {}
    infer_mem: dict[str, Any] = {}
    t0 = time.perf_counter()
    with phase_memory(dev, train_mem):
        train_times, data_wait_share = time_training(ctx, counts)
    t1 = time.perf_counter()
    with phase_memory(dev, infer_mem):
        infer_times = time_inference(ctx, counts)
    t2 = time.perf_counter()
    after = device_load(dev)
    shared = shared_device(before, after, torch.get_num_threads() if dev.type == "cpu" else 1)
    modalities = tuple(ctx.method.modalities)
    full = Subset(modalities, modalities)
    records = ([("train", f"iter{i}", "train_s_per_iter", t) for i, t in enumerate(train_times)]
               + [("infer", f"pass{i}", "infer_s_per_case", t) for i, t in enumerate(infer_times)]
               + [("train", "-", "peak_mem_mib", train_mem["mib"]), ("infer", "-", "peak_mem_mib", infer_mem["mib"]),
                  ("model", "-", "parameters", float(count_parameters(ctx.method)))])
    rows = [{"case_id": c, "eval_subset": full.label, "eval_code": full.code, "n_available": len(full),
             "region": phase, "metric": metric, "value": value} for phase, c, metric, value in records]
    meta = {"timing": {**counts, "timer": "cuda events" if dev.type == "cuda" else "perf_counter",
                       "train_s_per_iter_median": float(np.median(train_times)) if train_times else None,
                       "infer_s_per_case_median": float(np.median(infer_times)) if infer_times else None,
                       "data_wait_share": data_wait_share,
                       "memory": {"train": {train_mem["kind"]: train_mem["mib"]}, "infer": {infer_mem["kind"]: infer_mem["mib"]}},
                       "load_before": before, "load_after": after, "shared_device": shared}}
    return Outcome(rows, meta, {"train": t1 - t0, "evaluate": t2 - t1},
                   extra_columns={"memory_kind": train_mem["kind"], "shared_device": shared})
