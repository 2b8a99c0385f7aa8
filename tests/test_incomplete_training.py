"""Incomplete training data on any task (issue #25, item 2): per-modality missing rates (PASSION) and masks
missing not at random (a case attribute), the same for every method, bounding each method's own dropping."""

import json
import math

import numpy as np
import pytest
import torch

from conftest import assert_protocol_error
from test_check import SMALL
from missbench.cli import main
from missbench.core.availability import (
    attribute_ranks, mask_hash, mnar_masks, per_modality_masks, restrict_available, training_masks)
from missbench.core.execution import Execution
from missbench.core.tasks import get_task
from missbench.core.tasks.segmentation import PatchBatches
from missbench.core.dataset import Case
from missbench.core.training import TrainingDefaults
from missbench.engine.batches import draw_batch
from missbench.engine.context import split_masks
from missbench.experiment import registry
from missbench.experiment.protocol import ProtocolError, load_protocol
from missbench.store.run_folder import ModelFolder, load_rows, sweep_models

BRATS = registry.dataset_class("brats_synthetic")
MODS = BRATS.modalities
#: PASSION's mr1379 (T1 0.1, T1c 0.3, FLAIR 0.7, T2 0.9), in the data set's order FLAIR, T1, T1c, T2.
MR1379 = np.array([0.7, 0.1, 0.3, 0.9])
SEGMENTATION = [m for m in registry.method_names() if "segmentation" in registry.method_class(m).tasks]


def specs(protocol: str, methods: list[str], seeds: list[int] | None = None, **data):
    return load_protocol(registry.protocol_path(protocol)).expand(methods, BRATS, data, "smoke", seeds=seeds)


# --- the masks ------------------------------------------------------------------------------------

def test_per_modality_masks_have_the_declared_rates_and_never_an_empty_case():
    masks = per_modality_masks(40000, MR1379, np.random.default_rng(0))
    assert masks.any(1).all()
    every = MR1379.prod()  # a case that lost all four is drawn again: P(m missing | not all missing)
    assert (~masks).mean(0) == pytest.approx((MR1379 - every) / (1 - every), abs=0.01)
    assert (~masks).mean(0) == pytest.approx(MR1379, abs=0.02)
    with pytest.raises(ValueError, match="at least one modality needs a rate below 1"):
        per_modality_masks(5, np.ones(4), np.random.default_rng(0))


def test_mnar_masks_follow_the_attribute_as_declared():
    values = np.random.default_rng(1).permutation(8000).astype(float)
    for rate in (0.2, 0.5, 0.8):
        masks = mnar_masks(values, 4, 2, rate, "larger", np.random.default_rng(2))
        assert masks[:, [0, 1, 3]].all()  # only the named modality goes missing
        lost = ~masks[:, 2]
        assert lost.mean() == pytest.approx(rate, abs=0.02)
        lo, hi = (0, 2 * rate) if rate <= 0.5 else (2 * rate - 1, 1)  # the steepest ramp in [0, 1] with mean `rate`
        quartile = (values // 2000).astype(int)  # values are 0..7999: by rank
        assert [lost[quartile == k].mean() for k in range(4)] == pytest.approx([lo + (hi - lo) * (k + 0.5) / 4 for k in range(4)],
                                                                               abs=0.03)
        assert np.corrcoef(values, lost)[0, 1] > 0.25
    smaller = ~mnar_masks(values, 4, 2, 0.5, "smaller", np.random.default_rng(2))[:, 2]
    assert smaller[values < np.quantile(values, 0.25)].mean() > 0.7 > 0.3 > smaller[values >= np.quantile(values, 0.75)].mean()
    # Tied values (a site label) share their mid-rank, so every case of a site loses the modality alike.
    sites = np.arange(8000) % 4
    assert attribute_ranks(sites[:8]).tolist() == [0.125, 0.375, 0.625, 0.875] * 2
    lost = ~mnar_masks(sites, 4, 2, 0.5, "larger", np.random.default_rng(3))[:, 2]
    assert [lost[sites == s].mean() for s in range(4)] == pytest.approx([0.125, 0.375, 0.625, 0.875], abs=0.03)


def test_masks_are_the_same_for_every_method_and_differ_across_seeds():
    for protocol in ("passion_rates", "mnar"):
        runs = specs(protocol, ["zero_fill", "rfnet"], seeds=[0, 1], n_train=30, size=16)
        points = sorted({json.dumps([s.model.missing, s.model.missing_rate], sort_keys=True) for s in runs})
        assert len(runs) == 4 * len(points)  # methods x seeds x grid points
        by = {(s.model.method, s.model.seed, points.index(json.dumps([s.model.missing, s.model.missing_rate], sort_keys=True))):
              s.model for s in runs}
        task, data = get_task("segmentation"), BRATS(**runs[0].train_data)
        for point in range(len(points)):
            a, b = (split_masks(task, data, by[(m, 0, point)]) for m in ("zero_fill", "rfnet"))
            assert a["val"] is None and a["test"] is None  # complete evaluation cases
            assert a["train"].shape == (30, 4) and (a["train"] == b["train"]).all()
            assert by[("zero_fill", 0, point)].mask_seed == by[("rfnet", 0, point)].mask_seed
            other = split_masks(task, data, by[("zero_fill", 1, point)])["train"]
            assert not (other == a["train"]).all() and mask_hash(other) != mask_hash(a["train"])


def test_training_masks_need_the_attribute_per_training_case():
    block = {"scheme": "mnar", "attribute": "site", "modality": "T1c", "direction": "larger"}
    with pytest.raises(ValueError, match="3 values for 4 training cases"):
        training_masks(block, 0.5, 4, MODS, {"site": np.zeros(3)}, 0)
    sites = BRATS(n_train=9, size=16).case_attribute("train", "site")
    assert sites.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    volumes = BRATS(n_train=2, size=16).case_attribute("train", "tumour_volume")
    assert (volumes > 0).all() and volumes[0] != volumes[1]


def test_every_segmentation_data_set_offers_the_tumour_volume(tmp_path):
    from brats_files import write_set
    from missbench.realdata.prepare import prepare

    real = registry.dataset_class("brats2018")
    assert set(real.attribute_names()) == {"tumour_volume"} and set(BRATS.attribute_names()) == {"tumour_volume", "site"}
    assert registry.dataset_class("avmnist_synthetic").attribute_names() == {}
    ids = write_set(tmp_path / "train")
    prepare(real.for_prepare(root=str(tmp_path / "train"), cache=str(tmp_path / "cache")), progress=False)
    data = real(root=str(tmp_path / "train"), cache=str(tmp_path / "cache"), split="all")
    volumes = data.case_attribute("train", "tumour_volume")
    cases = [data.load(c) for c in sorted(ids["train"])]
    assert volumes.tolist() == [np.count_nonzero(c.target) * np.prod(c.spacing) for c in cases] and (volumes > 0).all()


# --- what a method sees ---------------------------------------------------------------------------

def test_the_drop_draw_stays_within_the_case_and_an_empty_one_falls_back_to_the_case():
    drawn = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]], dtype=torch.bool)
    masks = torch.tensor([[1, 0, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert restrict_available(drawn, masks).int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 1]]


def constant_cases(n: int) -> list[Case]:
    """Cases whose modality m is the constant 10 * case + m + 1 everywhere: a patch tells its case."""
    return [Case(f"c{i}", np.stack([np.full((8, 8, 8), 10.0 * i + m + 1, np.float32) for m in range(4)]),
                 np.zeros((8, 8, 8), np.uint8)) for i in range(n)]


@pytest.mark.parametrize("dropout", ["uniform_subset", "count_then_subset", "full"])
def test_a_batch_never_shows_a_modality_its_case_lacks(dropout):
    masks = per_modality_masks(12, MR1379, np.random.default_rng(4))
    batches = PatchBatches(constant_cases(12), 4, (4, 4, 4), np.random.default_rng(5), 0, masks)
    cfg, gen = TrainingDefaults(dropout=dropout), torch.Generator().manual_seed(6)
    shown = set()
    for step in range(60):
        x, _, available = draw_batch(batches, step, None, cfg, 10, gen, 4, 4, restrict=True)
        for b in range(4):
            case = int(x[b].max().item() // 10)
            assert not (available[b] & ~torch.from_numpy(masks[case])).any()  # within the case's modalities
            assert available[b].any()
            assert ((x[b].flatten(1).abs().sum(1) > 0) == available[b]).all()  # the rest zeroed
            shown.add((case, tuple(available[b].tolist())))
            if step < 10 or dropout == "full":  # warm-up and no dropping: the case's own modalities
                assert available[b].tolist() == masks[case].tolist()
    if dropout != "full":  # the method still drops within a case's modalities
        assert any(list(a) != masks[c].tolist() for c, a in shown)
    x, _, fixed = draw_batch(batches, 0, None, cfg, 0, gen, 4, 4)  # modality_rate / slots: the masks themselves
    assert [fixed[b].tolist() for b in range(4)] == [masks[int(x[b].max().item() // 10)].tolist() for b in range(4)]


def test_a_method_trains_on_exactly_the_modalities_of_each_case(tmp_path, monkeypatch):
    from missbench.engine.run import run

    proto = load_protocol(registry.protocol_path("mnar"))
    spec = proto.expand(["zero_fill"], BRATS, {}, "smoke", method_params={"zero_fill": SMALL["zero_fill"]})[0].on_cpu_threads(1)
    method, seen, cases = registry.method_class("zero_fill"), [], []
    sample, forward = PatchBatches.sample, method.training_output

    def spy_sample(self, step):
        x, y, masks = sample(self, step)
        cases.append(masks.clone())
        return x, y, masks

    def spy_forward(self, x, available, target=None):
        seen.append((x.detach().clone(), available.clone()))
        return forward(self, x, available, target)

    monkeypatch.setattr(PatchBatches, "sample", spy_sample)
    monkeypatch.setattr(method, "training_output", spy_forward)
    assert run(spec, tmp_path, Execution(progress=False, prefetch=False)) == "done"
    assert len(seen) == len(cases) == spec.budget.iterations
    lacking = 0
    for (x, available), masks in zip(seen, cases):
        assert not (available & ~masks).any()
        assert ((x.flatten(2).abs().sum(2) > 0) <= available).all()  # a missing modality's input is zero
        lacking += int((~masks).any())
    assert lacking  # some trained case lacked T1c (mnar at rate 0.5 over four cases)


# --- the shipped protocols, end to end --------------------------------------------------------------

#: Two methods run the shipped protocols whole (their grid points, mask sharing and records); every segmentation
#: method trains on PASSION's mr1379 masks (per-modality masks leave cases with any one to four modalities, which
#: mnar's T1c-only masks never do), through a protocol that inherits passion_rates with that one vector.
WHOLE = ["zero_fill", "shaspec"]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The shipped protocols at the smoke budget for `WHOLE`, and every segmentation method on mr1379
    ("every_method"), each at its small width and on one CPU thread."""
    out = tmp_path_factory.mktemp("incomplete")
    every = out / "mr1379.yaml"
    every.write_text("inherit: passion_rates\ndescription: mr1379 only\nmissing: {scheme: per_modality, rates: [%s]}\n"
                     % VECTOR)
    for protocol, methods, folder in (("passion_rates", WHOLE, "passion_rates"), ("mnar", WHOLE, "mnar"),
                                      (str(every), SEGMENTATION, "every_method")):
        small = [f"--param={m}.{k}={v}" for m in methods for k, v in SMALL.get(m, {}).items()]
        assert main(["--protocol", protocol, "--budget", "smoke", "--methods", ",".join(methods), *small,
                     "--threads", "1", "--no-progress", "--out", str(out / folder)]) == 0
    return out


def test_every_segmentation_method_trains_on_per_modality_masks(sweeps):
    assert {"shaspec", "rfnet", "mmformer", "m2ftrans", "zero_fill"} <= set(SEGMENTATION)
    rows = load_rows(sweeps / "every_method")
    dice = rows[rows.metric == "dice"]
    assert dice.groupby("method").eval_subset.nunique().to_dict() == dict.fromkeys(SEGMENTATION, 15)
    assert dice.value.between(0, 1).all()
    assert rows.mask_hash.nunique() == 1  # one mask set for every method
    lost = next(iter(sweep_models(sweeps / "every_method"))).meta()["missing_by_modality"]["train"]
    assert sum(rate > 0 for rate in lost.values()) >= 2  # the cases lack different modalities, not one alone


@pytest.mark.parametrize("protocol, points", [("passion_rates", 2), ("mnar", 1)])
def test_new_protocols_run_on_the_same_masks_for_every_method(sweeps, protocol, points):
    rows = load_rows(sweeps / protocol)
    dice = rows[rows.metric == "dice"]
    assert dice.groupby("model_id").eval_subset.nunique().eq(15).all()
    assert dice.groupby("method").model_id.nunique().to_dict() == dict.fromkeys(WHOLE, points)
    assert dice.value.between(0, 1).all()
    hashes: dict[str, set[str]] = {}
    for folder in sweep_models(sweeps / protocol):
        meta, model = folder.meta(), folder.spec()
        (score,) = folder.scores()
        assert set(score.rows().mask_hash) == {meta["mask_hash"]["train"]}  # every row names the training masks
        assert json.loads((score.path / "meta.json").read_text())["mask_hash"]["train"] == meta["mask_hash"]["train"]
        assert set(meta["missing_by_modality"]["train"]) == set(MODS)
        assert math.isclose(np.mean(list(meta["missing_by_modality"]["train"].values())), meta["missing_share"]["train"])
        point = json.dumps(model.missing, sort_keys=True) + str(model.missing_rate)
        hashes.setdefault(point, set()).add(meta["mask_hash"]["train"])
    assert len(hashes) == points and all(len(h) == 1 for h in hashes.values())  # one mask set per grid point
    assert len({h for hs in hashes.values() for h in hs}) == points
    if protocol == "mnar":
        assert set(rows.missing_rate) == {0.5}
    else:
        assert rows.missing_rate.isna().all()


def test_classification_trains_on_incomplete_data_too(tmp_path):
    path = tmp_path / "audio_missing.yaml"
    path.write_text(BASE.replace("brats_synthetic", "avmnist_synthetic").replace("[T1]", "[image, audio, image+audio]")
                    .replace("patch: 8,", "val_every: 1, dataset: {n_train: 6, n_val: 2, n_test: 4},")
                    + "missing: {scheme: per_modality, rates: [{image: 0.2, audio: 0.6}]}\n")
    (spec,) = load_protocol(path).expand(["zero_fill"], registry.dataset_class("avmnist_synthetic"), {}, "tiny")
    assert spec.model.missing["modality_rates"] == {"image": 0.2, "audio": 0.6} and spec.score.missing == {}
    assert main(["--protocol", str(path), "--methods", "zero_fill", "--threads", "1", "--no-progress",
                 "--out", str(tmp_path / "out")]) == 0
    (folder,) = sweep_models(tmp_path / "out")
    meta = folder.meta()
    assert set(meta["missing_share"]) == {"train"} and len(meta["mask_hash"]["train"]) == 16
    rows = folder.scores()[0].rows()
    assert set(rows.condition) == {"image", "audio", "image+audio"} and set(rows.mask_hash) == {meta["mask_hash"]["train"]}


def test_the_model_meta_records_the_realised_rates(sweeps):
    folder = ModelFolder(next(iter(sweep_models(sweeps / "mnar"))).path)
    by = folder.meta()["missing_by_modality"]["train"]
    assert by["FLAIR"] == by["T1"] == by["T2"] == 0 and 0 <= by["T1c"] <= 1


# --- refusals -------------------------------------------------------------------------------------

BASE = """
mode: non_dedicated
dataset: brats_synthetic
subsets: [T1]
seeds: [0]
default_budget: tiny
budgets:
  tiny: {iterations: 2, batch: 1, patch: 8, checkpoint_every: 1}
"""
VECTOR = "{FLAIR: 0.7, T1: 0.1, T1c: 0.3, T2: 0.9}"


@pytest.mark.parametrize(
    "block, message",
    [
        ("{scheme: per_modality, rates: [{FLAIR: 0.7, T1: 0.1, T1c: 0.3}]}",
         "missing.rates[0]={'FLAIR': 0.7, 'T1': 0.1, 'T1c': 0.3}: expected a missing rate for each modality of "
         "'brats_synthetic', no more: ['FLAIR', 'T1', 'T1c', 'T2']"),
        ("{scheme: per_modality, rates: [{FLAIR: 0.7, T1: 0.1, T1c: 0.3, T2: 0.9, PD: 0.5}]}", "no more: ['FLAIR'"),
        ("{scheme: per_modality, rates: [{FLAIR: 1.5, T1: 0.1, T1c: 0.3, T2: 0.9}]}",
         "missing.rates[0]={'FLAIR': 1.5, 'T1': 0.1, 'T1c': 0.3, 'T2': 0.9}: expected a mapping of each modality to its "
         "missing rate in [0, 1]"),
        ("{scheme: per_modality, rates: [0.3]}", "missing.rates[0]=0.3: expected a mapping of each modality"),
        ("{scheme: per_modality, rates: [{FLAIR: 1, T1: 1, T1c: 1, T2: 1}]}",
         "every rate is 1; at least one modality needs a rate below 1"),
        (f"{{scheme: per_modality, rates: [{VECTOR}, {VECTOR}]}}", "missing.rates: a vector is listed twice"),
        (f"{{scheme: per_modality, rates: [{VECTOR}], modality: T1}}",
         "missing.modality: scheme per_modality takes no 'modality'; its keys are ['scheme', 'rates', 'eval']"),
        (f"{{scheme: per_modality, rates: [{VECTOR}], eval: masks}}",
         "missing.eval 'masks': scheme per_modality masks the training split only"),
        ("{scheme: mnar, modality: T1c, rates: [0.5]}", "scheme mnar needs the key 'attribute'"),
        ("{scheme: mnar, attribute: site, rates: [0.5]}", "scheme mnar needs the key 'modality'"),
        ("{scheme: mnar, attribute: age, modality: T1c, rates: [0.5]}",
         "missing.attribute 'age': data set 'brats_synthetic' offers ['site', 'tumour_volume']"),
        ("{scheme: mnar, attribute: site, modality: PD, rates: [0.5]}", "missing.modality: 'PD' is not a modality of 'brats_synthetic'"),
        ("{scheme: mnar, attribute: site, modality: T1c, rates: [0.5], direction: up}",
         "missing.direction 'up'; expected one of ['larger', 'smaller']"),
        ("{scheme: mnar, attribute: site, modality: T1c, rates: [1.2]}", "missing.rates must be a non-empty list of numbers in [0, 1]"),
        ("{scheme: slots, rates: [0.1]}", "missing.scheme 'slots': per-sample missing rates of this scheme apply to classification"),
    ],
)
def test_bad_missing_blocks_are_refused_in_one_line(tmp_path, block, message):
    assert_protocol_error(tmp_path, BASE + f"missing: {block}\n", message)


def test_an_attribute_the_data_set_lacks_is_refused_for_that_data_set(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text(BASE + "missing: {scheme: mnar, attribute: tumour_volume, modality: T1c, rates: [0.5]}\n")
    avmnist = registry.dataset_class("avmnist_synthetic")
    with pytest.raises(ProtocolError, match=r"missing.modality: 'T1c' is not a modality of 'avmnist_synthetic'"):
        load_protocol(path).expand(["zero_fill"], avmnist, {})
    path.write_text(BASE + "missing: {scheme: mnar, attribute: tumour_volume, modality: audio, rates: [0.5]}\n")
    with pytest.raises(ProtocolError, match="missing.modality: 'audio' is not a modality of 'brats_synthetic'"):
        load_protocol(path)
    text = BASE.replace("brats_synthetic", "avmnist_synthetic").replace("[T1]", "[image]")
    path.write_text(text + "missing: {scheme: mnar, attribute: tumour_volume, modality: audio, rates: [0.5]}\n")
    assert main(["--protocol", str(path), "--methods", "zero_fill", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"bench.py: error: {path}: missing.attribute 'tumour_volume': data set 'avmnist_synthetic' offers no case "
                   f"attributes")
    assert not (tmp_path / "out").exists()
