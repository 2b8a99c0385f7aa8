"""The one metric module: per-case Dice and HD95 per region, with named empty-region policies.

Policies are recorded in every result row, because they move ET averages by points:
- ``empty="one"`` (default, RFNet/mmFormer and the BraTS rule): both empty -> Dice 1, HD95 0;
- ``empty="nan"`` (nnU-Net): both empty -> NaN, left out of averages.
In both, exactly one empty -> Dice 0 and HD95 = the volume's diagonal in mm (BraTS uses 373.13 mm,
the diagonal of 240x240x155 at 1 mm).
ET post-processing (BraTS/ShaSpec*): a predicted ET with fewer than ``et_threshold`` voxels counts as
empty; it is scored as region ``ETpp`` beside the raw ``ET``.
"""

from __future__ import annotations

import math

import numpy as np
from medpy.metric.binary import hd95 as medpy_hd95

from missbench.tasks.segmentation import REGION_LABELS

EMPTY_POLICIES = ("one", "nan")


def dice_and_hd95(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], empty: str = "one") -> tuple[float, float]:
    """Dice and HD95 (mm) of two boolean masks under the ``empty`` policy."""
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"unknown empty-region policy {empty!r}; expected one of {list(EMPTY_POLICIES)}")
    p, r = pred.any(), ref.any()
    if not p and not r:
        return (1.0, 0.0) if empty == "one" else (math.nan, math.nan)
    if not p or not r:
        return 0.0, float(np.linalg.norm(np.asarray(pred.shape) * np.asarray(spacing)))
    inter = np.logical_and(pred, ref).sum()
    dice = 2.0 * inter / (pred.sum() + ref.sum())
    return float(dice), float(medpy_hd95(pred, ref, voxelspacing=spacing))


def score_case(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], empty: str = "one", et_threshold: int = 500
) -> list[dict]:
    """Rows {region, metric, value, ref_voxels, pred_voxels} for ET, ETpp, TC and WT of one label map.

    The region sizes go with every row so that analyses can, e.g., keep only cases with an ET.
    """
    out = []
    for region in ("ET", "ETpp", "TC", "WT"):
        labels = REGION_LABELS["ET" if region == "ETpp" else region]
        p, r = np.isin(pred, labels), np.isin(ref, labels)
        if region == "ETpp" and p.sum() < et_threshold:
            p = np.zeros_like(p)
        dice, hd = dice_and_hd95(p, r, spacing, empty)
        sizes = {"ref_voxels": int(r.sum()), "pred_voxels": int(p.sum())}
        out += [{"region": region, "metric": "dice", "value": dice, **sizes}, {"region": region, "metric": "hd95", "value": hd, **sizes}]
    return out
