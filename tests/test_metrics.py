"""Scoring: the cropped surface distances and score_case equal medpy's whole-volume path, value for
value, and the HD95 definitions combine the same distances as medpy and MONAI do."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import medpy.metric.binary as medpy_binary
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from conftest import CHECKOUT
from missbench.core.metrics import (
    EMPTY_POLICIES,
    HD95_DEFINITIONS,
    bounding_box,
    dice_and_hd95,
    hd95_from_distances,
    score_case,
    surface_distances,
)

_spec = importlib.util.spec_from_file_location("scoring_benchmark", CHECKOUT / "benchmarks" / "scoring.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

#: medpy's per-direction surface distances (module-private there; the reference for ours).
medpy_surface_distances = getattr(medpy_binary, "__surface_distances")

SPACINGS = [(1.0, 1.0, 1.0), (1.0, 1.0, 3.0), (0.9, 1.1, 2.7), (0.4375, 0.4375, 1.2)]


def blob_labels(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """A random BraTS-like label map: nested smooth blobs (2 outside 1 outside 4) that reach the
    volume border anywhere, plus a sprinkle of isolated voxels of every label."""
    field = gaussian_filter(rng.standard_normal(shape), sigma)
    field /= field.std()
    t1, t2, t3 = np.sort(rng.uniform(0.2, 2.5, 3))
    labels = np.select([field > t3, field > t2, field > t1], [4, 1, 2], 0).astype(np.uint8)
    speckle = rng.random(shape) < rng.uniform(0, 0.01)
    labels[speckle] = rng.choice(np.array([1, 2, 4], np.uint8), int(speckle.sum()))
    return labels


def label_pairs(seed: int, n: int, shape: tuple[int, ...] = (22, 19, 15)) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (prediction, reference) pairs of random maps, with the empty cases made common: some
    pairs lose all of one label (or everything) on one or both sides."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        ref = blob_labels(rng, shape, rng.uniform(1.0, 3.0))
        pred = ref.copy() if i % 7 == 0 else blob_labels(rng, shape, rng.uniform(1.0, 3.0))
        for m in (pred, ref):
            if rng.random() < 0.3:
                m[m == rng.choice([1, 2, 4])] = 0
            if rng.random() < 0.05:
                m[:] = 0
        pairs.append((pred, ref))
    return pairs


def masks(seed: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Boolean (prediction, reference) pairs: every region of `label_pairs`, and edge cases: the
    whole volume, one face of it, single voxels at a corner and in the middle."""
    shape = (22, 19, 15)
    out = [(np.isin(p, labels), np.isin(r, labels)) for p, r in label_pairs(seed, n, shape) for labels in ((4,), (1, 4), (1, 2, 4))]
    full, face, corner, middle = (np.zeros(shape, bool) for _ in range(4))
    full[:] = True
    face[:, :, -1] = True
    corner[0, 0, 0] = True
    middle[10, 9, 7] = True
    out += [(full, face), (face, corner), (corner, middle), (middle, middle), (full, full)]
    return out


@pytest.mark.parametrize("spacing", SPACINGS)
def test_surface_distances_equal_medpys_element_for_element(spacing):
    compared = 0
    for pred, ref in masks(seed=1, n=12):
        if pred.any() and ref.any():
            to_ref, to_pred = surface_distances(pred, ref, spacing)
            np.testing.assert_array_equal(to_ref, medpy_surface_distances(pred, ref, spacing))
            np.testing.assert_array_equal(to_pred, medpy_surface_distances(ref, pred, spacing))
            compared += 1
    assert compared > 30


def test_surface_distances_need_two_non_empty_masks():
    some = np.zeros((4, 4, 4), bool)
    some[1, 1, 1] = True
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(some, np.zeros_like(some), (1, 1, 1))


def test_bounding_box_is_tight():
    mask = np.zeros((9, 8, 7), bool)
    assert bounding_box(mask) is None
    mask[2, 7, 3] = mask[5, 1, 0] = True
    assert bounding_box(mask) == (slice(2, 6), slice(1, 8), slice(0, 4))


@pytest.mark.parametrize("spacing", SPACINGS[:3])
@pytest.mark.parametrize("empty", EMPTY_POLICIES)
def test_dice_and_hd95_equal_the_plain_medpy_path(empty, spacing):
    for pred, ref in masks(seed=2, n=6):
        np.testing.assert_equal(dice_and_hd95(pred, ref, spacing, empty), bench.plain_dice_and_hd95(pred, ref, spacing, empty))


def test_max_directed_is_monais_rule_on_medpys_distances():
    """MONAI's compute_hausdorff_distance(percentile=95, directed=False): the larger of the two
    directed 95th percentiles of the same surfaces."""
    differs = 0
    for spacing in SPACINGS[:2]:
        for pred, ref in masks(seed=3, n=8):
            if pred.any() and ref.any():
                to_ref, to_pred = medpy_surface_distances(pred, ref, spacing), medpy_surface_distances(ref, pred, spacing)
                monai = max(np.percentile(to_ref, 95), np.percentile(to_pred, 95))
                assert dice_and_hd95(pred, ref, spacing, hd95="max_directed")[1] == monai
                pooled = dice_and_hd95(pred, ref, spacing)[1]
                assert pooled == medpy_binary.hd95(pred, ref, voxelspacing=spacing)
                differs += pooled != monai
    assert differs > 5


def test_hd95_definitions_on_a_worked_example():
    # 1-D: the reference is one run (surface {0, 9}); the prediction adds a voxel 21 further on.
    ref = np.zeros(40, bool)
    ref[0:10] = True
    pred = ref.copy()
    pred[30] = True
    to_ref, to_pred = surface_distances(pred, ref, (2.0,))
    assert to_ref.tolist() == [0, 0, 42] and to_pred.tolist() == [0, 0]
    # pooled: 95th percentile of [0, 0, 0, 0, 42] = 0.8 * 42; max_directed: of [0, 0, 42] = 0.9 * 42.
    assert hd95_from_distances(to_ref, to_pred, "pooled") == pytest.approx(33.6)
    assert hd95_from_distances(to_ref, to_pred, "max_directed") == pytest.approx(37.8)
    assert dice_and_hd95(pred, ref, (2.0,), hd95="max_directed") == (pytest.approx(20 / 21), pytest.approx(37.8))


def test_unknown_hd95_definition_is_rejected():
    some = np.ones((3, 3, 3), bool)
    assert HD95_DEFINITIONS == ("pooled", "max_directed")
    with pytest.raises(ValueError, match="HD95 definition"):
        dice_and_hd95(some, some, (1, 1, 1), hd95="mean")
    with pytest.raises(ValueError, match="HD95 definition"):
        score_case(some.astype(np.uint8), some.astype(np.uint8), (1, 1, 1), hd95="monai")
    with pytest.raises(ValueError, match="HD95 definition"):
        hd95_from_distances(np.zeros(1), np.zeros(1), "max")


@pytest.mark.parametrize("empty, spacing", [("one", (1.0, 1.0, 1.0)), ("nan", (0.9, 1.1, 2.7)), ("brats", (1.0, 1.0, 3.0)),
                                            ("rfnet", (1.0, 1.0, 1.0)), ("shaspec", (0.4375, 0.4375, 1.2)), ("nnunet", (1.0, 1.0, 1.0))])
def test_score_case_equals_the_plain_path_on_random_maps(empty, spacing):
    pairs = label_pairs(seed=4, n=10)
    for i, (pred, ref) in enumerate(pairs):
        threshold = [0, 1, 25, 500][i % 4]
        np.testing.assert_equal(score_case(pred, ref, spacing, empty, threshold), bench.plain_score_case(pred, ref, spacing, empty, threshold))


def test_score_case_equals_the_plain_path_on_tumour_like_cases():
    rng = np.random.default_rng(5)
    ref, preds = bench.synthetic_case(rng, (96, 96, 62))
    rows = [score_case(p, ref, (1.0, 1.0, 1.0), "brats", 60) for p in preds]
    assert rows == [bench.plain_score_case(p, ref, (1.0, 1.0, 1.0), "brats", 60) for p in preds]
    # the subsets exercise ETpp both ways: kept (equal to ET) and emptied by the threshold
    sizes = [{r["region"]: r["pred_voxels"] for r in case} for case in rows]
    assert any(0 < s["ET"] < 60 and s["ETpp"] == 0 for s in sizes) and any(s["ET"] >= 60 and s["ETpp"] == s["ET"] for s in sizes)


def test_et_threshold_boundary_keeps_or_empties_etpp():
    ref = np.zeros((12, 12, 12), np.uint8)
    ref[3:9, 3:9, 3:9] = 4
    pred = np.zeros_like(ref)
    pred[4:7, 4:7, 4:7] = 4  # 27 voxels of predicted ET
    for threshold, kept in [(27, True), (28, False)]:
        rows = {(r["region"], r["metric"]): r for r in score_case(pred, ref, (1, 1, 1), "brats", threshold)}
        assert (rows["ETpp", "hd95"]["value"] == rows["ET", "hd95"]["value"]) is kept
        assert rows["ETpp", "dice"]["pred_voxels"] == (27 if kept else 0)
        assert rows["ETpp", "hd95"]["value"] == (rows["ET", "hd95"]["value"] if kept else 373.13)


def test_score_case_takes_the_hd95_definition():
    pred, ref = label_pairs(seed=6, n=1)[0]
    for region, labels in (("TC", (1, 4)), ("WT", (1, 2, 4))):
        p, r = np.isin(pred, labels), np.isin(ref, labels)
        assert p.any() and r.any()
        rows = {(row["region"], row["metric"]): row["value"] for row in score_case(pred, ref, (1, 1, 2), hd95="max_directed")}
        to_ref, to_pred = medpy_surface_distances(p, r, (1, 1, 2)), medpy_surface_distances(r, p, (1, 1, 2))
        assert rows[region, "hd95"] == max(np.percentile(to_ref, 95), np.percentile(to_pred, 95))


def test_scoring_does_not_import_medpy():
    """A host without medpy (a bare GPU machine) can still score."""
    code = ("import sys; sys.modules['medpy'] = None\n"
            "import numpy as np\n"
            "from missbench.core.metrics import score_case\n"
            "a = np.zeros((8, 8, 8), np.uint8); a[2:6, 2:6, 2:6] = 2; b = np.roll(a, 1, 0)\n"
            "print(score_case(a, b, (1, 1, 1))[-1]['value'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=CHECKOUT, capture_output=True, text=True, check=True)
    assert float(out.stdout) == 1.0


def test_scoring_benchmark_runs_and_finds_equal_values(capsys):
    assert bench.main(["--shape", "48", "48", "31", "--plain-subsets", "2"]) == 0
    out = capsys.readouterr().out
    assert "True" in out and "CPU ratio" in out
