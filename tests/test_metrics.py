"""Scoring: the cropped surface distances and score_case equal medpy's whole-volume path, value for
value."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import medpy.metric.binary as medpy_binary
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from missbench import registry
from missbench.metrics import (
    EMPTY_POLICIES,
    bounding_box,
    dice_and_hd95,
    score_case,
    surface_distances,
)

_spec = importlib.util.spec_from_file_location("scoring_benchmark", registry.ROOT / "benchmarks" / "scoring.py")
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


def test_hd95_on_a_worked_example():
    # 1-D: the reference is one run (surface {0, 9}); the prediction adds a voxel 21 further on.
    ref = np.zeros(40, bool)
    ref[0:10] = True
    pred = ref.copy()
    pred[30] = True
    to_ref, to_pred = surface_distances(pred, ref, (2.0,))
    assert to_ref.tolist() == [0, 0, 42] and to_pred.tolist() == [0, 0]
    # the 95th percentile of the pooled [0, 0, 42, 0, 0] is 0.8 * 42
    assert dice_and_hd95(pred, ref, (2.0,)) == (pytest.approx(20 / 21), pytest.approx(33.6))


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


def test_scoring_does_not_import_medpy():
    """A host without medpy (a bare GPU machine) can still score."""
    code = ("import sys; sys.modules['medpy'] = None\n"
            "import numpy as np\n"
            "from missbench.metrics import score_case\n"
            "a = np.zeros((8, 8, 8), np.uint8); a[2:6, 2:6, 2:6] = 2; b = np.roll(a, 1, 0)\n"
            "print(score_case(a, b, (1, 1, 1))[-1]['value'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=registry.ROOT, capture_output=True, text=True, check=True)
    assert float(out.stdout) == 1.0


def test_scoring_benchmark_runs_and_finds_equal_values(capsys):
    assert bench.main(["--shape", "48", "48", "31", "--plain-subsets", "2"]) == 0
    out = capsys.readouterr().out
    assert "True" in out and "CPU ratio" in out
