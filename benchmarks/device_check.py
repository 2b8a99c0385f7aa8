#!/usr/bin/env python
"""Device check: what a paper run costs on this machine's GPU, part by part, in one table (#16).

    python benchmarks/device_check.py                          # on a GPU host: every part in under 8 minutes
    python benchmarks/device_check.py --device cpu --tiny      # every part end to end on tiny sizes (a test runs this)
    python benchmarks/device_check.py --parts tuning --iterations 200    # one part, longer

On a GPU host without internet, run it from a copy of the checkout with the missing wheels carried
along (docs/gpu.md). It needs none of submitit, nibabel or medpy. Parts, in this order; an item starts
only if it can end before ``--deadline-s`` (compiling items are allowed minutes), else it is listed as
skipped:

- timing: the timing protocol (missbench/engine/timing.py: the trainer's own step, optimiser and batch
  stream, CUDA-event timed) for every segmentation method at its paper budget's batch and patch, in
  fp32 (IEEE float32) and bf16 (autocast); ShaSpec with its official backbone at protocol B's
  80x160x160, batch 1, the others at protocol A's 80^3, batch 2. Training patches come from small
  synthetic volumes, zero-padded to the patch (the step's cost depends on its shape only); the
  inference figure is one sliding window at the patch. "h/run": the median seconds per iteration
  times the paper budget's iterations, training only.
- avmnist: ShaSpec and SMIL at batch 4 on avmnist_synthetic, beside ShaSpec's §4.5 figures (RTX 3090).
- data: ShaSpec's real training path (the run skeleton with --profile) at its paper patch from
  synthetic volumes of that size, with and without prefetching: the data wait share (time the loop
  waited for its batch over training wall time, each phase synchronised).
- eval: one 155x240x240 case: ShaSpec's sliding-window inference of the 15 subsets (one shared
  encoding), and scoring 15 subsets' label maps (Dice and HD95 of ET, ETpp, TC, WT;
  benchmarks/scoring.py's synthetic predictions).
- main: the README's main job, ``bench.py --protocol non_dedicated --methods shaspec,zero_fill``, on the device.
- tuning: ShaSpec's paper step compiled (inductor), then with each GPU option alone (TF32, cuDNN
  autotuning, fused optimiser, contiguous instead of channels-last, CUDA graphs) and all together
  with bf16 and compilation.
- compiled: every other method's paper step compiled.

With ``--tiny`` (for a CPU) every part runs on 32^3 patches, ShaSpec and the zero-fill U-Net at 4 base
channels (ShaSpec on its common backbone: the official one needs larger patches), compilation with the
eager backend, the main job at the smoke budget: every path at the smallest size that runs it.

Memory: "train MiB" is the peak of tensors allocated by PyTorch during the timed training phase
(torch.cuda.max_memory_allocated; on a CPU the peak resident memory above the phase's start). The
CUDA context and the allocator's cached free blocks come on top, so nvidia-smi shows more. Writes
every row and the device's description as JSON to ``--out``/device_check.json, and the README's "Cost
of a paper run" table to ``--out``/cost_of_a_paper_run.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scoring import SPACING, synthetic_case  # noqa: E402
from missbench.cli import main as bench_main  # noqa: E402
from missbench.core.dataset import Case  # noqa: E402
from missbench.core.execution import Execution  # noqa: E402
from missbench.core.inference import subset_predictor  # noqa: E402
from missbench.core.metrics import score_case  # noqa: E402
from missbench.core.subsets import all_subsets  # noqa: E402
from missbench.core.tasks.base import EvalSettings  # noqa: E402
from missbench.core.tasks.segmentation import predict_case  # noqa: E402
from missbench.engine.context import build  # noqa: E402
from missbench.engine.run import run  # noqa: E402
from missbench.experiment import registry  # noqa: E402
from missbench.experiment.protocol import Protocol, load_protocol  # noqa: E402
from missbench.experiment.spec import Budget  # noqa: E402
from missbench.store import provenance  # noqa: E402
from missbench.store.run_folder import ModelFolder, sweep_models  # noqa: E402

#: ShaSpec's Sec. 4.5 (Wang et al., CVPR 2023): avMNIST models at batch 4 on one RTX 3090, mean of 30 iterations.
PAPER_AVMNIST = {"shaspec": {"train_s": 0.0257, "infer_s": 0.0016}, "smil": {"train_s": 0.1309, "infer_s": 0.0019}}
#: The avMNIST comparison's batch (ShaSpec §4.5).
AVMNIST_BATCH = 4
#: Real BraTS volume in the cache's order (D x H x W: the NIfTI's 240 x 240 x 155 transposed).
REAL_CASE = (155, 240, 240)


@dataclass(frozen=True)
class Sizes:
    """What the check runs: the paper's sizes on a GPU, or tiny ones (``--tiny``) that exercise every part."""

    warmup: int
    iterations: int
    inference_passes: int
    #: Training patches are drawn from synthetic volumes of this size, zero-padded to the patch.
    volume: int
    #: Volume size for the data part (patches cut from volumes at least the patch, as from real ones).
    data_volume: int
    data_iterations: int
    eval_case: tuple[int, int, int]
    #: Patch of protocol A and B, or None: the paper budgets' own.
    patch: tuple[int, int, int] | None
    #: Method parameters other than the paper's, per method (marked * in the tables).
    params: dict[str, dict[str, Any]]
    compile_backend: str
    #: The main job's budget (None: the protocol's default, as in the README).
    main_budget: str | None
    deadline_s: float


GPU = Sizes(warmup=5, iterations=20, inference_passes=3, volume=32, data_volume=160, data_iterations=30, eval_case=REAL_CASE,
            patch=None, params={"shaspec": {"backbone": "official"}}, compile_backend="inductor", main_budget=None, deadline_s=460.0)
#: 32^3: at 16^3 some nets reach 2^3 voxels, where torch 2.13's CPU bf16 convolution backward returns NaN
#: gradients now and then (tests/test_timing.py).
TINY = Sizes(warmup=1, iterations=2, inference_passes=1, volume=24, data_volume=32, data_iterations=4, eval_case=(16, 32, 32),
             patch=(32, 32, 32),
             params={"shaspec": {"width": 4, "depth": 2, "dim": 16}, "zero_fill": {"width": 4, "depth": 2}},
             compile_backend="eager", main_budget="smoke", deadline_s=math.inf)


@dataclass
class Row:
    """One line of the table; None: not measured for this item."""

    part: str
    method: str
    setting: str
    shape: str = ""
    train_s: float | None = None
    train_mib: float | None = None
    infer_s: float | None = None
    data_wait: float | None = None
    hours: float | None = None
    note: str = ""


@dataclass
class Item:
    """A unit of work of one part, producing rows; part, method and setting name it when it fails or is skipped."""

    part: str
    method: str
    setting: str
    work: Callable[[], list[Row]]
    #: Seconds the item may take: it starts only if it can end before the deadline.
    allowance: float = 30.0


@dataclass
class Check:
    """The state of one device check: device, sizes, the protocols it writes, its output folder."""

    device: str
    sizes: Sizes
    out: Path
    methods: list[str]
    protocols: dict[str, Protocol] = field(default_factory=dict)
    paper: dict[str, Budget] = field(default_factory=dict)

    def execution(self, **options: Any) -> Execution:
        return Execution(device=self.device, progress=False, **options)

    def params(self, method: str) -> dict[str, Any]:
        """``method``'s parameters in this check (its paper's where empty)."""
        return self.sizes.params.get(method, {})

    def name(self, method: str) -> str:
        """``method`` as the tables show it: starred when it runs with other than its paper's parameters."""
        return method + ("*" if self.params(method) else "")


def paper_budgets(sizes: Sizes) -> dict[str, Budget]:
    """The paper budgets (``sizes.patch``, if given, for their patch): protocol B's for ShaSpec, protocol A's for the others."""
    out = {}
    for key, name in (("b", "brats2018_b"), ("a", "brats2018_a")):
        _, b, _ = load_protocol(registry.protocol_path(name)).budget("paper")
        out[key] = replace(b, patch=tuple(sizes.patch)) if sizes.patch else b
    return out


def timing_budget(b: Budget) -> dict[str, Any]:
    """What the check's protocols take of a paper budget: its iterations, batch and patch."""
    return {"iterations": b.iterations, "batch": b.batch, "patch": list(b.patch)}


def write_protocols(check: Check) -> None:
    """The timing and training protocols of the check (inheriting the shipped ones) into its output folder."""
    s = check.sizes
    check.paper = paper_budgets(s)
    small = {"size": s.volume, "n_train": 1, "n_val": 1, "n_test": 1}
    budgets = {f"paper_{k}": {**timing_budget(b), "checkpoint_every": b.iterations, "dataset": small} for k, b in check.paper.items()}
    budgets["avmnist"] = {"iterations": 1000, "batch": AVMNIST_BATCH, "checkpoint_every": 1000,
                          "datasets": {"avmnist_synthetic": {"n_train": 6, "n_val": 2, "n_test": 4}}}
    counts = {"warmup": s.warmup, "iterations": s.iterations, "inference_warmup": 1, "inference_passes": s.inference_passes}
    timing = check.out / "timing.yaml"
    timing.write_text(f"inherit: {registry.protocol_path('timing')}\ntiming: {json.dumps(counts)}\n"
                      f"budgets: {json.dumps(budgets)}\n")
    b = check.paper["b"]
    data_budget = {"iterations": s.data_iterations, "patch": list(b.patch), "batch": b.batch, "checkpoint_every": s.data_iterations,
                   "log_every": s.data_iterations, "dataset": {"size": s.data_volume, "n_train": 1, "n_val": 0, "n_test": 1}}
    data = check.out / "data.yaml"
    data.write_text(f"inherit: {registry.protocol_path('non_dedicated')}\nsubsets: [FLAIR+T1+T1c+T2]\n"
                    f"budgets: {{data: {json.dumps(data_budget)}}}\n")
    check.protocols = {"timing": load_protocol(timing), "data": load_protocol(data)}


def segmentation_methods() -> list[str]:
    return [m for m in registry.method_names() if "segmentation" in registry.method_class(m).tasks]


def shape_text(batch: int, patch: Any) -> str:
    return f"b{batch} " + ("x".join(map(str, patch)) if patch else "-")


def free_device(device: str) -> None:
    """Drop what the last run left (compiled graphs, cached blocks), so the next one starts alike."""
    gc.collect()
    torch._dynamo.reset()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def timing_rows(check: Check, part: str, method: str, budget: str, setting: str, exe: Execution,
                dataset: str = "brats_synthetic", iterations: int | None = None) -> list[Row]:
    """One timing-protocol run of ``method`` (fresh), as a row; ``iterations``: the paper run's, for h/run."""
    params = check.params(method) if dataset == "brats_synthetic" else {}
    spec = check.protocols["timing"].expand([method], registry.dataset_class(dataset), {}, budget, None, {method: params})[0]
    sweep = check.out / "runs" / setting.replace(" ", "_")
    try:
        run(spec, sweep, exe, force=True)
    finally:
        free_device(check.device)
    t = ModelFolder(sweep / spec.model.model_id).meta()["timing"]
    train_s = t["train_s_per_iter_median"]
    mem = next(iter(t["memory"]["train"].values()))
    notes = ["shared device"] if t["shared_device"] else []
    return [Row(part, method + ("*" if params else ""), setting, shape_text(spec.budget.batch, spec.budget.patch),
                train_s, mem, t["infer_s_per_case_median"], t["data_wait_share"],
                train_s * iterations / 3600 if iterations else None, ", ".join(notes))]


def timing_items(check: Check, part: str, setting: str, methods: list[str], **options: Any) -> list[Item]:
    """The timing protocol for ``methods`` at their paper budgets, under execution ``options``."""
    def rows(method: str) -> list[Row]:
        key = "b" if method == "shaspec" else "a"
        return timing_rows(check, part, method, f"paper_{key}", setting, check.execution(**options),
                           iterations=check.paper[key].iterations)

    allowance = 150.0 if options.get("compile") == "inductor" else 30.0  # inductor compiles a 3-D net in minutes
    return [Item(part, m, setting, lambda m=m: rows(m), allowance) for m in methods]


def avmnist_items(check: Check) -> list[Item]:
    def rows(method: str) -> list[Row]:
        row = timing_rows(check, "avmnist", method, "avmnist", "fp32", check.execution(), dataset="avmnist_synthetic")[0]
        paper = PAPER_AVMNIST[method]
        row.note = f"paper (RTX 3090): train {paper['train_s']} s, test {paper['infer_s']} s per iteration"
        return [row]

    return [Item("avmnist", m, "fp32", lambda m=m: rows(m)) for m in ("shaspec", "smil")]


def data_rows(check: Check, prefetch: bool) -> list[Row]:
    """ShaSpec's training path with --profile: seconds per iteration and the data wait share."""
    spec = check.protocols["data"].expand(["shaspec"], registry.dataset_class("brats_synthetic"), {}, "data", None,
                                          {"shaspec": check.params("shaspec")})[0]
    setting = "prefetch" if prefetch else "no prefetch"
    sweep = check.out / "runs" / f"data_{setting.replace(' ', '_')}"
    try:
        run(spec, sweep, check.execution(profile=True, prefetch=prefetch), force=True)
    finally:
        free_device(check.device)
    folder = ModelFolder(sweep / spec.model.model_id)
    train, meta = folder.profile()["train"], folder.meta()
    return [Row("data", check.name("shaspec"), setting, shape_text(spec.budget.batch, spec.budget.patch),
                meta["timings"]["train_seconds_per_iteration"], None, None, train["data_wait"]["share"],
                note=f"{spec.budget.iterations} iterations incl. the first, each phase synchronised")]


def eval_rows(check: Check) -> list[Row]:
    """One real-size case: 15-subset inference with ShaSpec at its paper windows, and scoring 15 subsets."""
    spec = check.protocols["timing"].expand(["shaspec"], registry.dataset_class("brats_synthetic"), {}, "paper_b", None,
                                            {"shaspec": check.params("shaspec")})[0]
    exe = check.execution()
    try:
        _, method = build(spec)
        exe.place(method, volumes=True)
        method.eval()
        subsets = all_subsets(method.modalities)
        rng = np.random.default_rng(0)
        case = Case("real_size", rng.standard_normal((len(method.modalities), *check.sizes.eval_case), dtype=np.float32),
                    np.zeros(check.sizes.eval_case, np.uint8))
        overlap = check.paper["b"].overlap
        settings = EvalSettings(spec.budget.patch, overlap)
        predict = subset_predictor(method, subsets, shared=True)
        warm = Case("warm", case.image[:, : spec.budget.patch[0], : spec.budget.patch[1], : spec.budget.patch[2]], case.target)
        predict_case(predict, method, warm, settings, exe)  # kernels chosen and loaded outside the timed pass
        t0 = time.perf_counter()
        predict_case(predict, method, case, settings, exe)  # ends with the label maps on the host: synchronised
        infer = time.perf_counter() - t0
    finally:
        free_device(check.device)
    ref, preds = synthetic_case(rng, tuple(reversed(check.sizes.eval_case)))
    t0 = time.perf_counter()
    for pred in preds:
        score_case(pred, ref, SPACING)
    scoring = time.perf_counter() - t0
    shape = "x".join(map(str, check.sizes.eval_case))
    return [Row("eval", check.name("shaspec"), "inference 15 subsets", shape, None, None, infer,
                note=f"windows {'x'.join(map(str, spec.budget.patch))}, overlap {overlap:.3g}, shared encoding"),
            Row("eval", "-", "scoring 15 subsets", shape, None, None, scoring,
                note=f"Dice+HD95 of ET/ETpp/TC/WT, one CPU process; 66 validation cases: {66 * (infer + scoring) / 60:.1f} min")]


def main_job_rows(check: Check) -> list[Row]:
    """The README's main job on the device, its console output kept in the output folder."""
    params = [f"--param={m}.{k}={v}" for m in ("shaspec", "zero_fill") for k, v in check.params(m).items()]
    args = ["--protocol", "non_dedicated", "--methods", "shaspec,zero_fill", *params, "--device", check.device, "--no-progress",
            "--threads", str(torch.get_num_threads()), "--force", "--out", str(check.out / "runs" / "main_job")]
    if check.sizes.main_budget:
        args += ["--budget", check.sizes.main_budget]
    log = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(log):
        status = bench_main(args)
    wall = time.perf_counter() - t0
    free_device(check.device)
    (check.out / "main_job.txt").write_text(log.getvalue())
    rows = [Row("main", "shaspec,zero_fill", f"exit {status}", note=f"{wall:.0f} s wall, `bench.py {' '.join(args)}`")]
    sweep = check.out / "runs" / "main_job"
    for folder in sweep_models(sweep):
        if not folder.is_done():
            continue
        (score,) = folder.scores()
        model, t = folder.spec(), {**folder.meta()["timings"], **score.meta()["timings"]}
        rows.append(Row("main", model.method, "train+evaluate", shape_text(model.budget["batch"], model.patch),
                        t["train_seconds_per_iteration"], None, t["eval_seconds_per_case"],
                        note=f"train {t['train_seconds']:.0f} s, evaluate {t['eval_seconds']:.0f} s"))
    return rows


#: The parts in the order they run: the figures the README needs first, compilation (minutes each) last.
PARTS = ("timing", "avmnist", "data", "eval", "main", "tuning", "compiled")


def plan(check: Check, parts: list[str]) -> list[Item]:
    """The items of ``parts``, in `PARTS` order. tuning: ShaSpec compiled, then with each GPU option alone and
    all together; compiled: every other method compiled."""
    cuda = torch.device(check.device).type == "cuda"
    compiled = {"compile": check.sizes.compile_backend}
    options = {"compiled": compiled, "tf32": {"tf32": True}, "cudnn autotuning": {"cudnn_benchmark": True},
               "fused optimiser": {"fused_optimizer": True}, "contiguous": {"channels_last": False}}
    if cuda:  # CUDA graphs replay inductor's kernels on a GPU only
        options |= {"CUDA graphs": {"compile": "inductor", "cuda_graphs": True},
                    "all": {"amp": "bf16", "tf32": True, "cudnn_benchmark": True, "fused_optimizer": True, "compile": "inductor"}}
    else:
        options |= {"all": {"amp": "bf16", "fused_optimizer": True, **compiled}}
    shaspec = [m for m in check.methods if m == "shaspec"]
    items = {
        "timing": timing_items(check, "timing", "fp32", check.methods) + timing_items(check, "timing", "bf16", check.methods, amp="bf16"),
        "avmnist": avmnist_items(check),
        "data": [Item("data", "shaspec", s, lambda p=p: data_rows(check, p)) for s, p in (("prefetch", True), ("no prefetch", False))],
        "eval": [Item("eval", "shaspec", "real-size case", lambda: eval_rows(check))],
        "main": [Item("main", "shaspec,zero_fill", "default budget", lambda: main_job_rows(check), 150.0)],
        "tuning": [i for setting, o in options.items() for i in timing_items(check, "tuning", setting, shaspec, **o)],
        "compiled": timing_items(check, "compiled", "compiled", [m for m in check.methods if m != "shaspec"], **compiled),
    }
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"device_check.py: unknown part {unknown[0]!r}; expected some of {', '.join(PARTS)}")
    return [i for part in PARTS if part in parts for i in items[part]]


def execute(items: list[Item], deadline_s: float, errors: Path, say: Callable[[str], None]) -> list[Row]:
    """Run the items in order, each that can end before the deadline; an item that fails gives a row saying
    why (traceback in ``errors``)."""
    start, rows = time.perf_counter(), []
    for item in items:
        elapsed = time.perf_counter() - start
        if elapsed + item.allowance > deadline_s:
            rows.append(Row(item.part, item.method, item.setting,
                            note=f"skipped: at {elapsed:.0f} s, {item.allowance:.0f} s more would pass the {deadline_s:.0f} s deadline"))
            continue
        t0 = time.perf_counter()
        try:
            got = item.work()
        except Exception as e:  # noqa: BLE001 - one failing method or option must not hide the others' figures
            with errors.open("a") as f:
                f.write(f"{item.part} {item.method} {item.setting}:\n{traceback.format_exc()}\n")
            got = [Row(item.part, item.method, item.setting, note=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")]
        rows += got
        for row in got:
            say(f"[{time.perf_counter() - start:6.0f} s] {format_row(row)}  ({time.perf_counter() - t0:.0f} s)")
    return rows


def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


#: The table's columns and their widths.
COLUMNS = {"part": 8, "method": 18, "setting": 22, "batch patch": 17, "train s/it": 10, "train MiB": 9, "infer s": 9,
           "data wait": 9, "h/run": 7, "note": 0}


def line(cells: tuple[str, ...]) -> str:
    return "  ".join(f"{c:<{w}}" for c, w in zip(cells, COLUMNS.values()))


def format_row(r: Row) -> str:
    return line((r.part, r.method, r.setting, r.shape, fmt(r.train_s), fmt(r.train_mib, 5), fmt(r.infer_s),
                 "-" if r.data_wait is None else f"{r.data_wait:.1%}", fmt(r.hours, 3), r.note))


def cost_table(rows: list[Row], check: Check) -> str:
    """The README's "Cost of a paper run" table: hours per run and training peak memory, fp32 and bf16."""
    by = {(r.method, r.setting): r for r in rows if r.part == "timing"}
    lines = ["| method | batch, patch | iterations | fp32 s/it | fp32 h/run | fp32 train GiB | bf16 s/it | bf16 h/run | bf16 train GiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method in check.methods:
        name = check.name(method)
        fp32, bf16 = by.get((name, "fp32")), by.get((name, "bf16"))
        if fp32 is None and bf16 is None:
            continue
        its = check.paper["b" if method == "shaspec" else "a"].iterations
        shape = (fp32 or bf16).shape  # type: ignore[union-attr]
        lines.append(f"| {name} | {shape} | {its:,} " + cost_cells(fp32) + cost_cells(bf16) + "|")
    return "\n".join(lines)


def cost_cells(r: Row | None) -> str:
    """s/it, h/run and GiB of one precision (dashes where its run failed or was skipped)."""
    if r is None or r.train_s is None:
        return "| - | - | - "
    return f"| {r.train_s:.3f} | {r.hours:.1f} | {r.train_mib / 1024:.1f} "


def describe(device: str) -> dict[str, Any]:
    """The machine the figures come from."""
    info = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, **provenance.device_info(torch.device(device))}
    info |= provenance.git_state(ROOT)
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="torch device (default cuda)")
    p.add_argument("--tiny", action="store_true", help="tiny sizes, no deadline: every part end to end in seconds")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts, of {', '.join(PARTS)} (module docstring)")
    p.add_argument("--methods", default=None, help="segmentation methods of the timing part (default: every one)")
    p.add_argument("--iterations", type=int, default=None, help="timed training iterations per timing run")
    p.add_argument("--deadline-s", type=float, default=None,
                   help=f"start only items that can end within this many seconds (default {GPU.deadline_s:.0f}; --tiny: none)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: a new temporary folder)")
    args = p.parse_args(argv)
    sizes = TINY if args.tiny else GPU
    sizes = replace(sizes, iterations=args.iterations or sizes.iterations,
                    deadline_s=sizes.deadline_s if args.deadline_s is None else args.deadline_s)
    out = args.out or Path(tempfile.mkdtemp(prefix="device_check_"))
    out.mkdir(parents=True, exist_ok=True)
    methods = args.methods.split(",") if args.methods else segmentation_methods()
    check = Check(args.device, sizes, out, methods)
    write_protocols(check)
    items = plan(check, args.parts.split(","))
    info = describe(args.device)
    print(f"device check: {info['device_name']} ({args.device}), torch {info['torch']}, {info['date']}, "
          f"git {str(info['git_sha'])[:10]}{' (dirty)' if info['git_dirty'] else ''}; output {out}", flush=True)
    print(line(tuple(COLUMNS)), flush=True)
    rows = execute(items, sizes.deadline_s, out / "errors.txt", lambda text: print(text, flush=True))
    table = cost_table(rows, check) if any(r.part == "timing" for r in rows) else ""
    (out / "device_check.json").write_text(json.dumps({"machine": info, "sizes": sizes.__dict__, "rows": [r.__dict__ for r in rows]},
                                                      indent=1, default=str))
    if table:
        (out / "cost_of_a_paper_run.md").write_text(table + "\n")
    print("\n" + line(tuple(COLUMNS)))
    for row in rows:
        print(format_row(row))
    if table:
        starred = {m: p for m, p in sizes.params.items() if m in methods}
        star = "; * " + ", ".join(f"{m} {json.dumps(p)}" for m, p in starred.items()) if starred else ""
        print(f"\nCost of a paper run (README), training only{star}:\n{table}")
    failed = [r for r in rows if r.note.startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
