#!/usr/bin/env python
"""15-subset evaluation cost: shared encoding vs one full pass per subset vs the bound.

    python benchmarks/subset_eval.py --methods shaspec,mean_fill --size 48 --patch 32

For each method, on one synthetic case, times (median of --repeats) the sliding-window evaluation
of all subsets (a) with shared encoding (the default path), (b) naively, one full pass per subset,
and (c) the bound T_encode + n_subsets x T_fuse+decode from timing the two parts alone (the all-zero
window's features are cached across cases, so they are left out of the bound too). Prints the
ratios naive/shared (speed-up) and shared/bound (overhead above the bound).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from missbench.core.inference import subset_predictor  # noqa: E402
from missbench.experiment.registry import dataset_class, method_class  # noqa: E402
from missbench.core.execution import Execution  # noqa: E402
from missbench.core.subsets import all_subsets  # noqa: E402
from missbench.core.tasks import get_task  # noqa: E402
from missbench.core.tasks.segmentation import sliding_window  # noqa: E402


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="shaspec,mean_fill")
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = dataset_class("brats_synthetic")(size=args.size)
    case = ds.load(ds.case_ids("test")[0])
    volume = torch.from_numpy(case.image)[None]
    subsets = all_subsets(ds.modalities)
    exe = Execution()
    patch = (args.patch,) * 3
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"case {args.size}^3, window {args.patch}^3, 50% overlap, {len(subsets)} subsets")
    print(f"{'method':<12} {'shared s':>9} {'naive s':>9} {'bound s':>9} {'naive/shared':>13} {'shared/bound':>13}")
    for name in args.methods.split(","):
        torch.manual_seed(0)
        model = method_class(name)(get_task(ds.task), ds.modalities).eval()
        model.to(memory_format=torch.channels_last_3d)

        predictors = {shared: subset_predictor(model, subsets, shared) for shared in (True, False)}

        def evaluate(shared: bool) -> None:
            pred = predictors[shared]
            sliding_window(volume, patch, lambda w: pred(exe.prepare(w)), 0.5, exe.window_batch)

        with torch.inference_mode():
            t_shared = median_time(lambda: evaluate(True), args.repeats)
            t_naive = median_time(lambda: evaluate(False), args.repeats)
            windows = []
            sliding_window(volume, patch, lambda w: windows.append(exe.prepare(w)) or [w[:, :1]], 0.5, exe.window_batch)
            if model.encode(windows[0]) is None:
                print(f"{name:<12} {'-':>9} {t_naive:9.3f} {'-':>9} {'(no shared encoding)':>27}")
                continue
            t_enc = median_time(lambda: [model.encode(w) for w in windows], args.repeats)
            feats = [model.encode(w) for w in windows]
            full = torch.ones(1, len(ds.modalities), dtype=torch.bool)
            t_dec = median_time(lambda: [model.decode(f, full.expand(w.shape[0], -1)) for f, w in zip(feats, windows)], args.repeats)
        bound = t_enc + len(subsets) * t_dec
        print(f"{name:<12} {t_shared:9.3f} {t_naive:9.3f} {bound:9.3f} {t_naive / t_shared:13.2f} {t_shared / bound:13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
