"""The one metric module: per-case Dice and HD95 per region, with named empty-region policies.

Policies are recorded in every result row, because they move ET averages by points (LGG cases
without ET). "Both empty": no reference and no predicted voxel; "one empty": exactly one of them.

    policy   Dice                           both empty      one empty      used by
    one      2|P&G|/(|P|+|G|)               Dice 1, HD95 0  0, diagonal    harness default (synthetic data)
    nan      2|P&G|/(|P|+|G|)               NaN, NaN        0, diagonal    left out of means
    rfnet    (2|P&G|+1e-8)/(|P|+|G|+1e-8)   ~1, HD95 0      ~0, 373.13 mm  RFNet / mmFormer (baselines.md §1)
    shaspec  2|P&G|/(|P|+|G|+1)             0, HD95 0       0, 373.13 mm   ShaSpec's Dice helper (shaspec.md §5.2)
    nnunet   2|P&G|/(|P|+|G|)               NaN, NaN        0, 373.13 mm   nnU-Net's evaluator (NaN excluded)
    brats    2|P&G|/(|P|+|G|)               Dice 1, HD95 0  0, 373.13 mm   BraTS challenge / portal rule

"diagonal" is the scored volume's diagonal in mm (373.13 mm for a whole 240x240x155 1-mm BraTS
volume); 373.13 mm is that BraTS constant whatever the grid. HD95 uses the case's header spacing.
ET post-processing (BraTS/ShaSpec*): a predicted ET with fewer than ``et_threshold`` voxels counts as
empty; it is scored as region ``ETpp`` beside the raw ``ET``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from medpy.metric.binary import hd95 as medpy_hd95

from missbench.core.regions import REGION_LABELS

#: HD95 (mm) of the BraTS rule when exactly one of prediction and reference is empty.
BRATS_MAX_HD95 = 373.13
#: policy -> (Dice smoothing added to numerator and denominator, or to the denominator only,
#: (Dice, HD95) when both are empty, HD95 when one is empty: None = the volume's diagonal).
_POLICIES: dict[str, tuple[tuple[float, float], tuple[float, float], float | None]] = {
    "one": ((0.0, 0.0), (1.0, 0.0), None),
    "nan": ((0.0, 0.0), (math.nan, math.nan), None),
    "rfnet": ((1e-8, 1e-8), (1.0, 0.0), BRATS_MAX_HD95),
    "shaspec": ((0.0, 1.0), (0.0, 0.0), BRATS_MAX_HD95),
    "nnunet": ((0.0, 0.0), (math.nan, math.nan), BRATS_MAX_HD95),
    "brats": ((0.0, 0.0), (1.0, 0.0), BRATS_MAX_HD95),
}
EMPTY_POLICIES = tuple(_POLICIES)


@dataclass(frozen=True)
class MetricPolicy:
    """The named scoring rules of a run, recorded in every row: the empty-region policy and the ET
    post-processing threshold (voxels)."""

    empty: str = "one"
    et_threshold: int = 500

    def columns(self) -> dict[str, Any]:
        """The row columns that record this policy."""
        return {"empty_policy": self.empty, "et_threshold": self.et_threshold}


def dice_and_hd95(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], empty: str = "one") -> tuple[float, float]:
    """Dice and HD95 (mm) of two boolean masks under the ``empty`` policy (table in the module docstring)."""
    if empty not in _POLICIES:
        raise ValueError(f"unknown empty-region policy {empty!r}; expected one of {list(EMPTY_POLICIES)}")
    (num_eps, den_eps), both_empty, one_empty_hd = _POLICIES[empty]
    p, r = pred.any(), ref.any()
    inter, total = float(np.logical_and(pred, ref).sum()), float(pred.sum() + ref.sum())
    dice = (2.0 * inter + num_eps) / (total + den_eps) if total + den_eps > 0 else both_empty[0]
    if not p and not r:
        return both_empty
    if not p or not r:
        hd = one_empty_hd if one_empty_hd is not None else float(np.linalg.norm(np.asarray(pred.shape) * np.asarray(spacing)))
        return float(dice), hd
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


def classification_scores(frame: pd.DataFrame) -> dict[str, float]:
    """Accuracy, F1-micro, F1-macro and macro one-vs-rest AUC of classification rows (``target``,
    ``pred``, ``prob``: a pandas DataFrame with one row per sample and condition, as rows.parquet of a
    classification run).

    F1-macro averages over the classes present in targets or predictions (scikit-learn's rule);
    AUC averages the one-vs-rest AUC over the classes that occur among the targets with both
    outcomes, NaN when none does.
    """
    from sklearn.metrics import f1_score, roc_auc_score

    y, pred = frame["target"].to_numpy(int), frame["pred"].to_numpy(int)
    probs = np.stack(frame["prob"].to_numpy()) if len(frame) else np.zeros((0, 0))
    aucs = [roc_auc_score(y == c, probs[:, c]) for c in np.unique(y) if 0 < (y == c).sum() < len(y)]
    return {
        "accuracy": float((y == pred).mean()) if len(y) else math.nan,
        "f1_micro": float(f1_score(y, pred, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(y, pred, average="macro", zero_division=0)),
        "auc_macro_ovr": float(np.mean(aucs)) if aucs else math.nan,
        "n": int(len(y)),
    }
