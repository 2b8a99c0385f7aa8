"""The one metric module: per-case Dice and HD95 per region, with named empty-region policies and
named HD95 definitions.

Policies are recorded in every result row, because they move ET averages by points (LGG cases
without ET). "Both empty": no reference and no predicted voxel; "one empty": exactly one of them.

    policy   Dice                           both empty      one empty      used by
    one      2|P&G|/(|P|+|G|)               Dice 1, HD95 0  0, diagonal    harness default (synthetic data)
    nan      2|P&G|/(|P|+|G|)               NaN, NaN        0, diagonal    left out of means
    rfnet    (2|P&G|+1e-8)/(|P|+|G|+1e-8)   ~1, HD95 0      ~0, 373.13 mm  RFNet / mmFormer (predict.py [1])
    shaspec  2|P&G|/(|P|+|G|+1)             0, HD95 0       0, 373.13 mm   ShaSpec's Dice helper (train_SS.py [2])
    nnunet   2|P&G|/(|P|+|G|)               NaN, NaN        0, 373.13 mm   nnU-Net's evaluator (NaN excluded)
    brats    2|P&G|/(|P|+|G|)               Dice 1, HD95 0  0, 373.13 mm   BraTS challenge / portal rule

"diagonal" is the scored volume's diagonal in mm (373.13 mm for a whole 240x240x155 1-mm BraTS
volume); 373.13 mm is that BraTS constant whatever the grid. HD95 uses the case's header spacing.
ET post-processing, RFNet's rule (predict.py [1] ``softmax_output_dice_class``, "post processing": a
predicted ET of fewer than 500 voxels is emptied for the ET score only, ``enhancing_postpro``; mmFormer's
predict.py is the same): a predicted ET with fewer than ``et_threshold`` voxels counts as empty; it is
scored as region ``ETpp`` beside the raw ``ET``. This is not ShaSpec*'s "smoothness enhancement" (ShaSpec
postprocess.py [2]: connected components under min(2000, 0.1 x the largest) voxels removed, a k-means
relabelling inside the oedema, and an ET under 500 voxels relabelled necrotic core, which moves WT and TC
too); `bench.py export --et-postprocess` writes that last step into the exported maps.

[1] github.com/dyh127/RFNet at 1e475fa5de4ac3f41f8de3d3102bb8b28383c2c4, predict.py ``softmax_output_dice_class``.
[2] github.com/billhhh/ShaSpec at 081fe7a1e40d6bbc0736dc93e779a0a5a439d091, train_SS.py ``dice_score``,
    postprocess.py; the paper's numbers come from the BraTS 2018 portal (README; issue #5).

When both masks are non-empty, HD95 is a 95th percentile (numpy's linear interpolation) of the
directed surface distances: d(P->G) from every surface voxel of the prediction to the nearest
surface voxel of the reference, and d(G->P) back. A surface voxel is a mask voxel that erosion with
face neighbours (connectivity 1; outside the volume counts as background) removes; distances are
Euclidean in mm with the case's spacing. The definitions differ in how the two directions combine
(on random maps by up to 6.5 mm, issue #15), so the definition is a recorded metric setting:

    definition    HD95                                  used by
    pooled        95th pct of d(P->G) and d(G->P)       medpy.metric.binary.hd95; nnU-Net v1's evaluator
                  pooled into one set                   (nnunet/evaluation/metrics.py hausdorff_distance_95
                                                        calls it); CBICA's Hausdorff95 CLI (calls it,
                                                        without spacing); harness default, as before
    max_directed  max(95th pct of d(P->G),              MONAI compute_hausdorff_distance(percentile=95,
                      95th pct of d(G->P))              directed=False; spacing= in current versions,
                                                        voxel units before); BraTS 2023+ lesion-wise
                                                        evaluation (rachitsaluja/BraTS-2023-Metrics:
                                                        DeepMind surface-distance compute_robust_hausdorff,
                                                        the same max rule on surfel-area-weighted
                                                        percentiles, so not the same numbers)

RFNet's and mmFormer's evaluation reports Dice only (predict.py [1]); ShaSpec's eval.py computes
no metric, its numbers come from the BraTS 2018 portal [2], whose HD95 code we have not seen. The MONAI code read (metrics/utils.py get_mask_edges:
scipy's binary_erosion with its
default face connectivity; np.percentile per direction) finds the same surfaces and percentiles,
so ``max_directed`` is its number; its crop to the union's bounding box changes no surface (see
`surface_distances`).

Scoring is fast enough for full-size volumes (benchmarks/scoring.py): erosions and distance
transforms run on the bounding box of each region's prediction and reference (see
`surface_distances`), so their cost follows the tumour, not the 9-million-voxel volume; the values
equal medpy's on the whole volume (tests/test_metrics.py). medpy is not imported here, so a host
without it can score; it stays a dependency as the tests' reference.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from missbench.core.params import Between, OneOf, Rule, check_params
from missbench.core.regions import REGION_LABELS

if TYPE_CHECKING:  # pandas and scipy are imported where rows are scored, so `bench.py list` does not pay for them
    import pandas as pd

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
#: Named ways of combining the two directed surface-distance sets into one HD95 (module docstring).
HD95_DEFINITIONS = ("pooled", "max_directed")
#: The regions `score_case` scores, in row order.
SCORED_REGIONS = ("ET", "ETpp", "TC", "WT")


@dataclass(frozen=True)
class MetricPolicy:
    """The named scoring rules of a run, recorded in every row: the empty-region policy, the ET
    post-processing threshold (voxels) and the HD95 definition."""

    empty: str = "one"
    et_threshold: int = 500
    hd95: str = "pooled"

    def __post_init__(self) -> None:
        check_params("metric policy", asdict(self), POLICY_DEFAULTS, POLICY_RULES)

    def columns(self) -> dict[str, Any]:
        """The row columns that record this policy."""
        return {"empty_policy": self.empty, "et_threshold": self.et_threshold, "hd95_definition": self.hd95}


#: Each metric policy setting's default (its type) and allowed values.
POLICY_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(MetricPolicy)}
POLICY_RULES: dict[str, Rule] = {"empty": OneOf(*EMPTY_POLICIES), "et_threshold": Between(0, integer=True),
                                 "hd95": OneOf(*HD95_DEFINITIONS)}


def _check_settings(empty: str, hd95: str) -> None:
    """Reject an unknown policy or definition before any work, naming the valid ones."""
    if empty not in _POLICIES:
        raise ValueError(f"unknown empty-region policy {empty!r}; expected one of {list(EMPTY_POLICIES)}")
    if hd95 not in HD95_DEFINITIONS:
        raise ValueError(f"unknown HD95 definition {hd95!r}; expected one of {list(HD95_DEFINITIONS)}")


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Slices of the smallest box that holds every True voxel of ``mask``; None when there is none.

    Each axis is found on the slab the previous axes left, so a small tumour costs little more
    than one pass over the volume.
    """
    box: list[slice] = []
    view = mask
    for axis in range(mask.ndim):
        hit = np.flatnonzero(view.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
        view = view[(slice(None),) * axis + (box[-1],)]
    return tuple(box)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (mm) of two non-empty boolean masks: from every surface voxel of
    ``pred`` to the nearest surface voxel of ``ref``, and from every surface voxel of ``ref`` to ``pred``'s.

    The two arrays equal medpy's ``__surface_distances(pred, ref)`` and ``(ref, pred)`` (connectivity
    1; `medpy.metric.binary.hd95` pools them), element for element, but both come from one erosion
    of each mask and one distance transform of each surface, on the bounding box of ``pred | ref``
    rather than the whole volume. The box changes nothing: a mask voxel on a face of the box has its
    outward neighbour outside both masks, so erosion (which reads the face neighbours and treats
    outside the array as background) removes it in the box exactly as in the volume; every surface
    voxel lies in the box; scipy's exact Euclidean transform works on integer index differences
    scaled by the spacing, so a shift of the grid leaves each distance bit-for-bit unchanged.
    """
    from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

    if not pred.any() or not ref.any():
        raise ValueError("surface distances need two non-empty masks")
    box = bounding_box(pred | ref)
    pred, ref = pred[box], ref[box]
    footprint = generate_binary_structure(pred.ndim, 1)
    pred_surface = pred ^ binary_erosion(pred, structure=footprint, iterations=1)
    ref_surface = ref ^ binary_erosion(ref, structure=footprint, iterations=1)
    sampling = np.asarray(spacing, dtype=np.float64)
    pred_to_ref = distance_transform_edt(~ref_surface, sampling=sampling)[pred_surface]
    ref_to_pred = distance_transform_edt(~pred_surface, sampling=sampling)[ref_surface]
    return pred_to_ref, ref_to_pred


def hd95_from_distances(pred_to_ref: np.ndarray, ref_to_pred: np.ndarray, definition: str = "pooled") -> float:
    """HD95 (mm) of the two directed distance sets of `surface_distances` under ``definition``
    (``pooled``: medpy's; ``max_directed``: MONAI's and BraTS 2023's; table in the module docstring)."""
    if definition == "pooled":
        return float(np.percentile(np.hstack((pred_to_ref, ref_to_pred)), 95))
    if definition == "max_directed":
        return float(max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95)))
    raise ValueError(f"unknown HD95 definition {definition!r}; expected one of {list(HD95_DEFINITIONS)}")


def _region_scores(pred: np.ndarray, ref: np.ndarray, counts: tuple[int, int, int], shape: tuple[int, ...],
                   spacing: tuple[float, ...], empty: str, hd95: str) -> tuple[float, float]:
    """Dice and HD95 of two boolean masks whose voxel counts (|P|, |G|, |P&G|) are ``counts``.

    The masks may be any crop that holds both (HD95 is computed only when both are non-empty);
    ``shape`` is the whole volume's, for the diagonal of the one-empty rule.
    """
    (num_eps, den_eps), both_empty, one_empty_hd = _POLICIES[empty]
    n_pred, n_ref, n_inter = counts
    inter, total = float(n_inter), float(n_pred + n_ref)
    dice = (2.0 * inter + num_eps) / (total + den_eps) if total + den_eps > 0 else both_empty[0]
    if not n_pred and not n_ref:
        return both_empty
    if not n_pred or not n_ref:
        hd = one_empty_hd if one_empty_hd is not None else float(np.linalg.norm(np.asarray(shape) * np.asarray(spacing)))
        return float(dice), hd
    return float(dice), hd95_from_distances(*surface_distances(pred, ref, spacing), hd95)


def dice_and_hd95(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], empty: str = "one",
                  hd95: str = "pooled") -> tuple[float, float]:
    """Dice and HD95 (mm) of two boolean masks under the ``empty`` policy and the ``hd95`` definition
    (tables in the module docstring)."""
    _check_settings(empty, hd95)
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    counts = (int(np.count_nonzero(pred)), int(np.count_nonzero(ref)), int(np.count_nonzero(pred & ref)))
    return _region_scores(pred, ref, counts, pred.shape, spacing, empty, hd95)


def score_case(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], empty: str = "one", et_threshold: int = 500,
               hd95: str = "pooled") -> list[dict]:
    """Rows {region, metric, value, ref_voxels, pred_voxels} for ET, ETpp, TC and WT of one label map
    against the reference label map, under the ``empty`` policy and the ``hd95`` definition.

    The region sizes go with every row so that analyses can, e.g., keep only cases with an ET.
    Both maps are cropped once to the bounding box of their non-zero voxels (no region holds label
    0), and ETpp reuses ET's scores, which it equals unless its prediction is emptied; the policy
    and the definition are not in the rows: the engine stamps the run's metric settings on them.
    """
    _check_settings(empty, hd95)
    foreground = pred != 0
    foreground |= ref != 0
    box = bounding_box(foreground) or (slice(0, 0),) * pred.ndim
    pred_box, ref_box = pred[box], ref[box]
    scores: dict[str, tuple[tuple[int, int, int], tuple[float, float]]] = {}
    for region in ("ET", "TC", "WT"):
        p, r = np.isin(pred_box, REGION_LABELS[region]), np.isin(ref_box, REGION_LABELS[region])
        counts = (int(np.count_nonzero(p)), int(np.count_nonzero(r)), int(np.count_nonzero(p & r)))
        scores[region] = counts, _region_scores(p, r, counts, pred.shape, spacing, empty, hd95)
        if region == "ET":
            if counts[0] >= et_threshold:
                scores["ETpp"] = scores["ET"]
            else:
                emptied = (0, counts[1], 0)
                scores["ETpp"] = emptied, _region_scores(np.zeros_like(p), r, emptied, pred.shape, spacing, empty, hd95)
    out = []
    for region in SCORED_REGIONS:
        (n_pred, n_ref, _), (dice, hd) = scores[region]
        sizes = {"ref_voxels": n_ref, "pred_voxels": n_pred}
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
