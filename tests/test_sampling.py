"""The patch pipelines (missbench/core/tasks/sampling.py) against the official rules they transcribe, and the
protocols' choice of pipeline as part of every model's identity.

The ET-centred share (patches whose crop is centred on an enhancing-tumour voxel) of ShaSpec's crop is compared
with the official rule's expectation, computed here exactly by enumeration from BraTSDataSet.py
``locate_bbx_wScale`` (github.com/billhhh/ShaSpec at 081fe7a1e40d6bbc0736dc93e779a0a5a439d091): with p 0.5 a
region among ET, WT, TC (each 1/3) and one of its voxels (uniform) as the centre, the crop shifted back inside
the volume; else a uniform start within the margins (0 along D, 15 along H, 10 along W).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from missbench.core.dataset import Case
from missbench.core.tasks.sampling import (RegionIndex, sample_rfnet, sample_shaspec, sample_uniform, shaspec_box,
                                           uniform_start)
from missbench.core.tasks.segmentation import PatchSampler
from missbench.experiment import registry
from missbench.experiment.protocol import load_protocol

PATCH = (16, 16, 16)
#: Draws per Monte Carlo estimate: the standard error of a share near 0.2 is 0.006.
DRAWS = 4000


@pytest.fixture(scope="module")
def case() -> Case:
    """A fixed synthetic case: brats_synthetic's first training case at 32^3."""
    ds = registry.dataset_class("brats_synthetic")(size=32, n_train=1, n_val=0, n_test=1)
    return ds.load(ds.case_ids("train")[0])


def centred_on_et(target: np.ndarray, start, size) -> bool:
    return target[tuple(a + (min(a + p, s) - a) // 2 for a, p, s in zip(start, size, target.shape))] == 4


def official_et_share(target: np.ndarray, patch: tuple[int, ...]) -> float:
    """The official rule's ET-centred share for unscaled crops, exactly (every voxel of every region, every start)."""
    shape = target.shape
    margins = [min(m, (s - p) // 2) for m, s, p in zip((0, 15, 10), shape, patch)]
    starts = [range(m, s - p - m + 1) for m, s, p in zip(margins, shape, patch)]
    uniform = np.mean([centred_on_et(target, st, patch) for st in itertools.product(*starts)])
    per_region = []
    for labels in ((4,), (1, 2, 4), (1, 4)):  # ET, WT, TC (id2trainId's channels)
        voxels = np.argwhere(np.isin(target, labels))
        if not len(voxels):
            per_region.append(uniform)
            continue
        lo = np.clip(voxels - np.array(patch) // 2, 0, np.array(shape) - np.array(patch))  # centred, shifted inside
        per_region.append(np.mean([centred_on_et(target, st, patch) for st in lo]))
    return 0.5 * np.mean(per_region) + 0.5 * uniform


def uniform_et_share(target: np.ndarray, patch: tuple[int, ...]) -> float:
    starts = [range(0, s - p + 1) for s, p in zip(target.shape, patch)]
    return float(np.mean([centred_on_et(target, st, patch) for st in itertools.product(*starts)]))


def test_shaspec_crop_centres_on_et_as_often_as_the_official_rule(case):
    """ShaSpec's crop reproduces the official rule's ET-centred share; the uniform crop (RFNet's, and the plain
    sampler's) centres far fewer patches on ET."""
    target, regions, rng = case.target, RegionIndex(case.target), np.random.default_rng(0)
    official = official_et_share(target, PATCH)
    got = np.mean([centred_on_et(target, (b := shaspec_box(target.shape, regions, PATCH, rng)).start,
                                 tuple(e - s for s, e in zip(b.start, b.stop))) for _ in range(DRAWS)])
    se = np.sqrt(official * (1 - official) / DRAWS)
    assert abs(got - official) < 4 * se, (got, official)
    uniform = uniform_et_share(target, PATCH)
    got_uniform = np.mean([centred_on_et(target, uniform_start(target.shape, PATCH, rng), PATCH) for _ in range(DRAWS)])
    assert abs(got_uniform - uniform) < 4 * np.sqrt(max(uniform, 1e-3) / DRAWS)
    assert official > 2 * uniform  # the class-centred crop matters: it is what the old sampler missed


def test_pipelines_give_patches_of_the_budget_size_and_their_augmentation(case):
    rng = np.random.default_rng(1)
    regions = RegionIndex(case.target)
    for _ in range(20):
        for image, target in (sample_shaspec(case, regions, PATCH, rng), sample_rfnet(case, PATCH, rng), sample_uniform(case, PATCH, rng)):
            assert image.shape == (4, *PATCH) and target.shape == PATCH and image.dtype == np.float32
            assert set(np.unique(target)) <= {0, 1, 2, 4}
    # uniform: a plain crop of the volume
    image, target = sample_uniform(case, PATCH, np.random.default_rng(2))
    start = uniform_start(case.target.shape, PATCH, np.random.default_rng(2))
    sl = tuple(slice(a, a + p) for a, p in zip(start, PATCH))
    assert np.array_equal(target, case.target[sl]) and np.array_equal(image, case.image[(slice(None), *sl)])
    # a smaller volume than the patch is padded, never refused
    small = Case("small", case.image[:, :10, :12, :14], case.target[:10, :12, :14])
    for sampler in ("shaspec", "rfnet", "uniform"):
        x, y = PatchSampler([small], PATCH, np.random.default_rng(3), sampler).sample(2)
        assert tuple(x.shape) == (2, 4, *PATCH) and tuple(y.shape) == (2, *PATCH)


def test_shaspec_mirroring_and_scaling_follow_the_code():
    """ShaSpec's two mirror steps make each axis flipped with p 0.5, independently; the crop is scaled with p 0.5."""
    ramp = np.arange(8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    case = Case("ramp", np.stack([ramp] * 4), np.zeros((8, 8, 8), np.uint8))
    regions, rng = RegionIndex(case.target), np.random.default_rng(4)
    flips, n = np.zeros(3), 2000
    for _ in range(n):
        image, _ = sample_shaspec(case, regions, (8, 8, 8), rng)
        # the whole volume is the crop (scaled crops resized back): each axis is increasing or decreasing
        flips += [np.sign(np.diff(image[0], axis=a).mean()) < 0 for a in range(3)]
    assert np.all(np.abs(flips / n - 0.5) < 0.05), flips / n


def test_rfnet_rotation_and_intensity_change():
    """RFNet's rotation is by an integer angle in [-10, 9] degrees with -1 image corners; its intensity factors vary
    per channel and along H only."""
    volume = np.ones((2, 20, 20, 20), np.float32)
    case = Case("ones", volume, np.ones((20, 20, 20), np.uint8))
    rng = np.random.default_rng(5)
    corners, values = 0, []
    for _ in range(50):
        image, target = sample_rfnet(case, (20, 20, 20), rng)
        corners += (image < -0.5).any()  # -1 corners after x * U(0.9, 1.1) + U(-0.1, 0.1)
        assert not (target == 255).any() and set(np.unique(target)) <= {0, 1}
        inside = image[:, 8:12, 8:12, 8:12]  # away from rotated corners: 1 * scale + shift
        assert np.allclose(inside, inside[:, :1, :, :1], atol=1e-6)  # constant along D and W
        values.append(inside[:, 0, :, 0])
    assert 0 < corners < 50  # angle 0 (no corners) has p 1/20
    v = np.concatenate([x.ravel() for x in values])
    assert v.min() >= 0.9 - 0.1 - 1e-6 and v.max() <= 1.1 + 0.1 + 1e-6


def test_protocols_choose_the_pipeline_and_it_is_in_the_model_identity(tmp_path):
    """brats2018_a: RFNet's; brats2018_b and the synthetic protocols: ShaSpec's. A method whose default differs
    records the protocol's choice in its model spec, and two pipelines are two models."""
    from conftest import CHECKOUT

    def sampler_of(protocol: str) -> str:
        return load_protocol(CHECKOUT / "protocols" / f"{protocol}.yaml").training["sampler"]

    assert sampler_of("brats2018_a") == "rfnet" and sampler_of("brats2018_b") == "shaspec"
    for protocol in ("non_dedicated", "dedicated", "alpha_beta", "dao_loss", "timing"):
        assert sampler_of(protocol) == "shaspec"
    p = load_protocol(CHECKOUT / "protocols" / "non_dedicated.yaml")
    syn = registry.dataset_class("brats_synthetic")
    specs = {s.model.method: s.model for s in p.expand(["rfnet", "shaspec"], syn, {}, "smoke")}
    assert specs["rfnet"].training == {"sampler": "shaspec"}  # not RFNet's default: recorded
    assert "sampler" not in specs["shaspec"].training       # ShaSpec's default: the method's code says it
    other = p.expand(["rfnet"], syn, {}, "smoke", training={"sampler": "rfnet"})[0].model
    assert other.training == {} and other.model_id != specs["rfnet"].model_id
    # whole samples have no patch pipeline: classification models carry none
    audio = load_protocol(CHECKOUT / "protocols" / "non_dedicated.yaml").expand(
        ["zero_fill"], registry.dataset_class("imgtab_synthetic"), {}, "smoke")[0].model
    assert "sampler" not in audio.training
