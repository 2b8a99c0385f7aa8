#!/usr/bin/env python
"""Scoring cost of one full-size BraTS case on 15 subsets: the plain medpy path against score_case.

    python benchmarks/scoring.py                    # 1 synthetic 240x240x155 case, 1 mm spacing
    python benchmarks/scoring.py --cases 3 --plain-subsets 5

Each synthetic case has a tumour-like reference (rough nested ellipsoids: edema 2 around a core
whose rim is enhancing 4 and centre necrotic 1; a few tens of thousands of voxels) and one
prediction per modality subset that differs from it the way a missing-modality model's does: the
tumour shifted and resized, a rougher outline the fewer modalities there are, little or no ET
without T1c (so ETpp and the empty-region rules are exercised) and, with one or two modalities, a
spurious blob elsewhere in the brain. Both paths score every region (ET, ETpp, TC, WT) under the
default policy; the plain one is the algorithm score_case had before it cropped
(`plain_score_case`, kept here as the reference: medpy's hd95 on the whole volume per region). The
plain path takes minutes per case, so ``--plain-subsets`` times it on the first subsets only and
scales to 15; the new path always scores all 15. Rows must be equal, float for float. One process;
wall and CPU time per case are printed (on a shared machine the wall time includes waiting for a core).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from missbench.core.metrics import score_case  # noqa: E402
from missbench.core.regions import REGION_LABELS  # noqa: E402

#: BraTS volume (voxels) and its spacing (mm).
SHAPE = (240, 240, 155)
SPACING = (1.0, 1.0, 1.0)
#: The 15 non-empty subsets of (FLAIR, T1, T1c, T2) as availability masks.
SUBSETS = [tuple(bool(code >> i & 1) for i in range(4)) for code in range(1, 16)]
T1C = 2

#: The empty-region policies of score_case before it cropped (metrics.py at 7a96a46).
_PLAIN_POLICIES: dict[str, tuple[tuple[float, float], tuple[float, float], float | None]] = {
    "one": ((0.0, 0.0), (1.0, 0.0), None),
    "nan": ((0.0, 0.0), (math.nan, math.nan), None),
    "rfnet": ((1e-8, 1e-8), (1.0, 0.0), 373.13),
    "shaspec": ((0.0, 1.0), (0.0, 0.0), 373.13),
    "nnunet": ((0.0, 0.0), (math.nan, math.nan), 373.13),
    "brats": ((0.0, 0.0), (1.0, 0.0), 373.13),
}


def plain_dice_and_hd95(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], empty: str = "one") -> tuple[float, float]:
    """metrics.dice_and_hd95 before it cropped: medpy's hd95 on the whole volume."""
    from medpy.metric.binary import hd95 as medpy_hd95

    (num_eps, den_eps), both_empty, one_empty_hd = _PLAIN_POLICIES[empty]
    p, r = pred.any(), ref.any()
    inter, total = float(np.logical_and(pred, ref).sum()), float(pred.sum() + ref.sum())
    dice = (2.0 * inter + num_eps) / (total + den_eps) if total + den_eps > 0 else both_empty[0]
    if not p and not r:
        return both_empty
    if not p or not r:
        hd = one_empty_hd if one_empty_hd is not None else float(np.linalg.norm(np.asarray(pred.shape) * np.asarray(spacing)))
        return float(dice), hd
    return float(dice), float(medpy_hd95(pred, ref, voxelspacing=spacing))


def plain_score_case(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], empty: str = "one", et_threshold: int = 500) -> list[dict]:
    """metrics.score_case before it cropped: np.isin and medpy per region, ETpp scored anew."""
    out = []
    for region in ("ET", "ETpp", "TC", "WT"):
        labels = REGION_LABELS["ET" if region == "ETpp" else region]
        p, r = np.isin(pred, labels), np.isin(ref, labels)
        if region == "ETpp" and p.sum() < et_threshold:
            p = np.zeros_like(p)
        dice, hd = plain_dice_and_hd95(p, r, spacing, empty)
        sizes = {"ref_voxels": int(r.sum()), "pred_voxels": int(p.sum())}
        out += [{"region": region, "metric": "dice", "value": dice, **sizes}, {"region": region, "metric": "hd95", "value": hd, **sizes}]
    return out


def draw_tumour(labels: np.ndarray, centre: np.ndarray, radii: np.ndarray, rng: np.random.Generator,
                roughness: float, core: float) -> None:
    """Write a BraTS-like tumour into ``labels`` in place: edema (2) inside a rough ellipsoid of
    ``radii`` voxels, tumour core at ``core`` of its radius, enhancing (4) on the core's outer 40%
    and necrosis (1) inside. ``roughness`` scales a smooth random field added to the radius."""
    half = np.ceil(radii * (1 + 2 * roughness)).astype(int) + 2
    lo, hi = np.maximum(centre - half, 0), np.minimum(centre + half + 1, labels.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    grid = np.ogrid[box]
    radius = np.sqrt(sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, radii)))
    field = gaussian_filter(rng.standard_normal(radius.shape), 3.0)
    radius = radius + roughness * field / field.std()
    view = labels[box]
    view[radius < 1] = 2
    view[radius < core] = 4
    view[radius < 0.6 * core] = 1


def synthetic_case(rng: np.random.Generator, shape: tuple[int, ...] = SHAPE) -> tuple[np.ndarray, list[np.ndarray]]:
    """A reference label map and one prediction per subset of `SUBSETS` (module docstring)."""
    size = np.asarray(shape)
    centre = (size * rng.uniform(0.35, 0.65, 3)).astype(int)
    radii = size / 240 * rng.uniform(16, 24, 3)
    ref = np.zeros(shape, np.uint8)
    draw_tumour(ref, centre, radii, rng, roughness=0.1, core=0.55)
    preds = []
    for subset in SUBSETS:
        n = sum(subset)
        pred = np.zeros(shape, np.uint8)
        shift = rng.normal(0, 4 / n, 3).round().astype(int)
        scale = 1 + rng.normal(0, 0.2 / n, 3)
        core = 0.55 * (1 + rng.normal(0, 0.1)) if subset[T1C] else rng.choice([0.0, 0.2, 0.3, 0.4])
        draw_tumour(pred, centre + shift, radii * scale, rng, roughness=0.1 + 0.1 / n, core=core)
        if n <= 2:
            offset = rng.choice([-1, 1], 3) * (size * rng.uniform(0.1, 0.2, 3)).astype(int)
            draw_tumour(pred, np.clip(centre + offset, 0, size - 1), radii * 0.3, rng, roughness=0.2, core=0.0)
        preds.append(pred)
    return ref, preds


def timed(fn: Callable[[], list]) -> tuple[float, float, list]:
    """(wall s, CPU s, result) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=1, help="synthetic cases")
    p.add_argument("--plain-subsets", type=int, default=15, help="subsets per case the plain path scores (its time is scaled to 15)")
    p.add_argument("--shape", type=int, nargs=3, default=list(SHAPE), metavar=("X", "Y", "Z"), help="volume size (voxels)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    k = max(1, min(args.plain_subsets, len(SUBSETS)))
    print(f"{args.cases} synthetic case(s) of {args.shape}, spacing {SPACING} mm, {len(SUBSETS)} subsets each; "
          f"plain path timed on {k} subset(s) per case and scaled to {len(SUBSETS)}; one process")
    print(f"{'case':>4} {'WT vox':>7} {'plain s':>8} {'plain cpu':>9} {'new s':>7} {'new cpu':>8} {'ratio':>7} {'rows equal':>10}")
    totals = np.zeros(4)
    for case in range(args.cases):
        ref, preds = synthetic_case(rng, tuple(args.shape))
        wall_p, cpu_p, plain = timed(lambda: [plain_score_case(q, ref, SPACING) for q in preds[:k]])
        wall_n, cpu_n, new = timed(lambda: [score_case(q, ref, SPACING) for q in preds])
        equal = plain == new[:k]
        times = np.array([wall_p * len(SUBSETS) / k, cpu_p * len(SUBSETS) / k, wall_n, cpu_n])
        totals += times
        print(f"{case:>4} {int(np.isin(ref, REGION_LABELS['WT']).sum()):>7} {times[0]:8.2f} {times[1]:9.2f} {times[2]:7.3f} "
              f"{times[3]:8.3f} {times[1] / times[3]:6.1f}x {str(equal):>10}")
        if not equal:
            print("values differ from the plain path")
            return 1
    mean = totals / args.cases
    print(f"mean per case: plain {mean[0]:.2f} s ({mean[1]:.2f} s CPU), new {mean[2]:.3f} s ({mean[3]:.3f} s CPU); "
          f"CPU ratio {mean[1] / mean[3]:.1f}x, wall ratio {mean[0] / mean[2]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
