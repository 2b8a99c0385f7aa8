"""The synthetic BraTS-like default data set: determinism, labels, splits and the contrast pattern."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from missbench.core.dataset import Case, Dataset
from missbench.experiment.registry import load_plugin

ROOT = Path(__file__).resolve().parent.parent
SIZE = 32


@pytest.fixture(scope="module")
def mod():
    return load_plugin(ROOT / "datasets" / "brats_synthetic.py", "datasets")


@pytest.fixture(scope="module")
def cases(mod):
    """30 cases at 32^3: (image, target) pairs."""
    return [mod.generate_case(0, i, SIZE) for i in range(30)]


def test_class_attributes(mod):
    cls = mod.BratsSynthetic
    assert issubclass(cls, Dataset)
    assert cls.name == "brats_synthetic" and cls.task == "segmentation"
    assert cls.modalities == ("FLAIR", "T1", "T1c", "T2")
    assert cls.et_threshold == 50
    assert "synthetic" in cls.description.lower()
    assert cls.defaults == {"size": 64, "n_train": 40, "n_val": 6, "n_test": 12, "seed": 0}


def test_determinism(mod):
    a_img, a_tgt = mod.generate_case(3, 5, SIZE)
    b_img, b_tgt = mod.generate_case(3, 5, SIZE)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_tgt, b_tgt)
    c_img, c_tgt = mod.generate_case(3, 6, SIZE)
    d_img, _ = mod.generate_case(4, 5, SIZE)
    assert not np.array_equal(a_img, c_img) and not np.array_equal(a_tgt, c_tgt)
    assert not np.array_equal(a_img, d_img)


def test_no_global_rng_state(mod):
    np.random.seed(1)
    a = mod.generate_case(0, 2, SIZE)[0]
    np.random.seed(2)
    b = mod.generate_case(0, 2, SIZE)[0]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("size", [32, 48])
def test_shapes_dtypes_labels(mod, size):
    image, target = mod.generate_case(0, 1, size)
    assert image.shape == (4, size, size, size) and image.dtype == np.float32
    assert target.shape == (size, size, size) and target.dtype == np.uint8
    assert set(np.unique(target)) <= {0, 1, 2, 4}
    assert np.isfinite(image).all()


def test_labels_nested_and_inside_brain(cases):
    for image, target in cases:
        assert set(np.unique(target)) <= {0, 1, 2, 4}
        wt, tc, et = target > 0, np.isin(target, (1, 4)), target == 4
        assert wt.any() and tc.any()
        assert not (et & ~tc).any() and not (tc & ~wt).any()
        brain = (image != 0).any(axis=0)
        assert brain[wt].all(), "tumour outside the brain"
        # Background is exactly zero in every modality, and the brain is the same in all.
        for m in range(4):
            assert np.array_equal(image[m] != 0, brain)
        assert 0.2 < brain.mean() < 0.8
        frac = wt.sum() / brain.sum()
        assert 0.01 < frac < 0.15


def test_zscore_over_brain(cases):
    image, _ = cases[0]
    brain = image[0] != 0
    for m in range(4):
        vals = image[m][brain]
        assert abs(vals.mean()) < 1e-3 and abs(vals.std() - 1.0) < 1e-3


def test_et_absent_in_some_cases(cases):
    absent = [not (t == 4).any() for _, t in cases]
    assert 0.05 <= np.mean(absent) <= 0.4
    for (_, t), a in zip(cases, absent):
        if a:  # low-grade-like: the core is all label 1
            assert (t == 1).any()


def _pooled_core_stats(cases):
    """Per modality: (ET mean - non-ET core mean) / within-core std, pooled over cases with ET."""
    diffs = []
    for image, target in cases:
        et, ncr = target == 4, target == 1
        if et.sum() < 5 or ncr.sum() < 5:
            continue
        core = et | ncr
        diffs.append([(image[m][et].mean() - image[m][ncr].mean()) / image[m][core].std() for m in range(4)])
    return np.asarray(diffs)


def test_et_visible_only_in_t1c(mod, cases):
    d = _pooled_core_stats(cases)
    assert len(d) >= 10
    mean = d.mean(axis=0)
    t1c = mod.MODALITIES.index("T1c")
    assert mean[t1c] > 1.0, mean
    for m in range(4):
        if m != t1c:
            assert abs(mean[m]) < 0.3, (mod.MODALITIES[m], mean)


def _best_threshold_dice(values, truth):
    """Best voxel Dice of ``values > t`` against ``truth`` over a grid of thresholds."""
    best = 0.0
    for t in np.quantile(values, np.linspace(0.5, 0.999, 100)):
        pred = values > t
        best = max(best, 2.0 * (pred & truth).sum() / (pred.sum() + truth.sum()))
    return best


def test_wt_bright_in_flair_with_overlap(mod, cases):
    flair = mod.MODALITIES.index("FLAIR")
    dices = []
    for image, target in cases[:12]:
        brain = image[flair] != 0
        wt = target > 0
        tumour, healthy = image[flair][wt], image[flair][brain & ~wt]
        assert tumour.mean() > healthy.mean() + 1.0
        # Not trivially separable: no single FLAIR threshold recovers WT perfectly.
        dices.append(_best_threshold_dice(image[flair][brain], wt[brain]))
    assert max(dices) < 0.97 and 0.6 < np.mean(dices) < 0.95, dices


def test_splits(mod):
    ds = mod.BratsSynthetic(size=SIZE)
    train, val, test = ds.case_ids("train"), ds.case_ids("val"), ds.case_ids("test")
    assert (len(train), len(val), len(test)) == (40, 6, 12)
    assert train[0] == "syn0000" and val[0] == "syn0040" and test[-1] == "syn0057"
    assert not (set(train) & set(val)) and not (set(train) & set(test)) and not (set(val) & set(test))
    assert ds.case_ids("train") == train  # fixed
    small = mod.BratsSynthetic(n_train=3, n_val=1, n_test=2)
    assert small.case_ids("train") + small.case_ids("val") + small.case_ids("test") == [f"syn{i:04d}" for i in range(6)]


def test_load_and_cache(mod):
    ds = mod.BratsSynthetic(size=SIZE, n_train=2, n_val=1, n_test=1, seed=7)
    case = ds.load("syn0003")
    assert isinstance(case, Case) and case.case_id == "syn0003"
    assert case.image.shape == (4, SIZE, SIZE, SIZE) and case.image.dtype == np.float32
    assert case.target.dtype == np.uint8 and case.spacing == (1.0, 1.0, 1.0)
    assert case.info["has_et"] == bool((case.target == 4).any()) and case.info["split"] == "test"
    image, target = mod.generate_case(7, 3, SIZE)
    np.testing.assert_array_equal(case.image, image)
    np.testing.assert_array_equal(case.target, target)
    case.image[:] = 0  # callers may scribble on their copy
    again = ds.load("syn0003")
    np.testing.assert_array_equal(again.image, image)


def test_errors(mod):
    ds = mod.BratsSynthetic(size=SIZE, n_train=2, n_val=1, n_test=1)
    with pytest.raises(ValueError, match="train"):
        ds.case_ids("validation")
    for bad in ("syn0004", "syn9999", "case0001", "syn1", "syn-001"):
        with pytest.raises((KeyError, ValueError), match="unknown case id"):
            ds.load(bad)
    with pytest.raises(ValueError, match="unknown parameter"):
        mod.BratsSynthetic(sizee=32)
    with pytest.raises(ValueError):
        mod.BratsSynthetic(size=8)
