"""Per-sample missing-modality masks (missbench/core/availability.py) and the protocol files that grid over their rate."""

import numpy as np
import pytest

from conftest import assert_protocol_error
from missbench.experiment import registry
from missbench.core.availability import missing_share, modality_rate_masks, slot_masks, split_masks
from missbench.experiment.protocol import ProtocolError, load_protocol

AVS = registry.dataset_class("avmnist_synthetic")


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.7])
def test_slot_masks_have_the_requested_rate_and_never_drop_everything(p, m):
    masks = slot_masks(20000, m, p, np.random.default_rng(0))
    assert masks.any(1).all()
    # Each slot is dropped with probability p; a sample that lost all M gets one back: p - p^M / M.
    assert missing_share(masks) == pytest.approx(p - p**m / m, abs=0.01)
    per_modality = (~masks).mean(0)
    assert np.allclose(per_modality, per_modality.mean(), atol=0.02)  # no modality favoured
    assert (slot_masks(50, m, p, np.random.default_rng(3)) == slot_masks(50, m, p, np.random.default_rng(3))).all()


def test_modality_rate_takes_the_share_of_the_total_per_class():
    y = np.repeat(np.arange(10), 90)  # 900 training samples of a 1,500-sample data set
    for rate, total in ((0.05, 75), (0.10, 150), (0.15, 225), (0.20, 300)):
        masks = modality_rate_masks(y, 2, 1, rate, 1500, 10, np.random.default_rng(1))
        assert masks[:, 0].all() and masks[:, 1].sum() == total
        per_class = np.bincount(y[masks[:, 1]], minlength=10)
        assert per_class.max() - per_class.min() <= 1
    with pytest.raises(ValueError, match="class 0 needs"):
        modality_rate_masks(y[:20], 2, 1, 0.5, 1500, 10, np.random.default_rng(0))


def test_split_masks_are_deterministic_and_per_split():
    labels = {"train": np.arange(200) % 10, "val": np.arange(40) % 10, "test": np.arange(60) % 10}
    slots = {"scheme": "slots", "eval": "masks"}
    a = split_masks(slots, 0.5, labels, ("image", "audio"), 10, seed=7)
    b = split_masks(slots, 0.5, labels, ("image", "audio"), 10, seed=7)
    assert all((a[s] == b[s]).all() for s in labels) and {len(a[s]) for s in labels} == {200, 40, 60}
    c = split_masks(slots, 0.5, labels, ("image", "audio"), 10, seed=8)
    assert not (a["train"] == c["train"]).all()
    rate = split_masks({"scheme": "modality_rate", "modality": "audio", "eval": "subsets"}, 0.1, labels, ("image", "audio"), 10, 0)
    assert rate["val"] is None and rate["test"] is None and rate["train"][:, 1].sum() == 30  # 10% of 300


def test_protocols_grid_over_the_rate_and_share_masks_across_methods():
    proto = load_protocol(registry.protocol_path("audio_rate"))
    specs = proto.expand(["zero_fill", "shaspec"], AVS, {}, "smoke")
    assert [s.model.missing_rate for s in specs] == [0.05, 0.10, 0.15, 0.20] * 2
    assert all(s.budget.patch is None and s.score.subsets == ("image",) for s in specs)
    assert len({s.run_id for s in specs}) == 8 and "_r0.05_" in specs[0].run_id
    assert specs[0].model.mask_seed == specs[4].model.mask_seed != specs[1].model.mask_seed  # same rate, other method: same masks
    slots = load_protocol(registry.protocol_path("missing_slots")).expand(["zero_fill"], AVS, {}, "smoke")
    assert [s.model.missing_rate for s in slots] == [0.1, 0.3, 0.5, 0.7] and slots[0].model.missing["eval"] == "masks"
    assert slots[0].score.missing == {"eval": "masks"}


@pytest.mark.parametrize("dataset, second", [("avmnist_synthetic", "audio"), ("imgtab_synthetic", "tabular")])
def test_non_dedicated_and_dedicated_run_on_classification_data_sets(dataset, second):
    cls = registry.dataset_class(dataset)
    for name in ("non_dedicated", "dedicated"):
        specs = load_protocol(registry.protocol_path(name)).expand(["zero_fill"], cls, {}, "smoke")
        assert {s.budget.patch for s in specs} == {None}
        assert all("size" not in s.train_data for s in specs)  # brats_synthetic's overrides stay there
        assert specs[0].train_data["n_test"] < cls.defaults["n_test"]  # the smoke budget's per-data-set override
        cls(**specs[0].train_data)
    ded = load_protocol(registry.protocol_path("dedicated")).expand(["zero_fill"], cls, {}, "smoke")
    assert [s.model.train_subset for s in ded] == ["image", second, f"image+{second}"]
    assert [s.score.subsets for s in ded] == [(s.model.train_subset,) for s in ded]


BASE = """
mode: non_dedicated
dataset: avmnist_synthetic
subsets: [image]
seeds: [0]
default_budget: tiny
budgets:
  tiny: {iterations: 2, batch: 1, checkpoint_every: 1}
"""


@pytest.mark.parametrize(
    "text, message",
    [
        (BASE + "missing: {scheme: slots}\n", "missing: missing required key 'rates'"),
        (BASE + "missing: {scheme: holes, rates: [0.1]}\n", "missing.scheme 'holes'"),
        (BASE + "missing: {scheme: slots, rates: [1.5]}\n", "missing.rates must be a non-empty list of numbers in [0, 1]"),
        (BASE + "missing: {scheme: slots, rates: 0.1}\n", "missing: key 'rates' must be list"),
        (BASE + "missing: {scheme: modality_rate, rates: [0.1]}\n", "needs the key 'modality'"),
        (BASE + "missing: {scheme: slots, rates: [0.1], eval: all}\n", "missing.eval 'all'"),
        (BASE + "missing: {scheme: slots, rates: [0.1], colour: red}\n", "missing: unknown key 'colour'"),
        (BASE.replace("non_dedicated", "dedicated") + "missing: {scheme: slots, rates: [0.1]}\n", "needs mode non_dedicated"),
        (BASE.replace("checkpoint_every: 1", "checkpoint_every: 1, val_every: x"), "budgets.tiny.val_every='x': expected an integer >= 0"),
    ],
)
def test_malformed_missing_block_names_file_and_key(tmp_path, text, message):
    assert_protocol_error(tmp_path, text, message)


def test_missing_block_is_checked_against_the_data_set(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(BASE + "missing: {scheme: modality_rate, modality: speech, rates: [0.1]}\n")
    with pytest.raises(ProtocolError, match=r"missing.modality: 'speech' is not a modality"):
        load_protocol(path).expand(["zero_fill"], AVS, {})
    path.write_text(BASE.replace("avmnist_synthetic", "brats_synthetic").replace("[image]", "[T1]").replace("batch: 1", "batch: 1, patch: 8")
                    + "missing: {scheme: slots, rates: [0.1]}\n")
    with pytest.raises(ProtocolError, match="apply to classification data sets"):
        load_protocol(path).expand(["zero_fill"], registry.dataset_class("brats_synthetic"), {})
    path.write_text(BASE.replace("avmnist_synthetic", "brats_synthetic").replace("[image]", "[T1]"))
    with pytest.raises(ProtocolError, match=r"budgets.tiny: missing required key 'patch'"):
        load_protocol(path).expand(["zero_fill"], registry.dataset_class("brats_synthetic"), {})
