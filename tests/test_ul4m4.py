import sys

import pytest
import torch

from conftest import (
    MODS, assert_classification_ignores_missing, assert_every_pattern_ignores_missing, assert_shared_encoding_matches,
    assert_shaspec_segmentation_training, classification_task, tiny_batch, tiny_classification_batch, toy_losses,
)
from missbench.core.availability import zero_inputs
from missbench.core.method import count_parameters
from missbench.experiment.registry import method_class

UL4M4 = method_class("ul4m4")
module = sys.modules[UL4M4.__module__]


def make_cls(task=None, **params):
    torch.manual_seed(0)
    return UL4M4(task or classification_task(), ("image", "audio"), **{"k": 4, "head_width": 16, **params})


def availability(batch: int, m: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, m, generator=g) > 0.4
    a[~a.any(1), 0] = True
    return a


def fit(model, x, available, y, repeats: int = 2):
    model.eval()
    model.fit_stage(0, lambda: iter([(zero_inputs(x, available), available, y)] * repeats))
    model.train()


def test_task_head_is_the_mm_imdb_tasknet_at_paper_size():
    # CLIP 512 + 512 -> 23 genres: projections 2 x (512·256 + 256) = 262,656; per attention layer
    # in-proj 3·256·256 + 768 and out-proj 256·256 + 256 = 263,168, LayerNorm 512 -> 2 x 263,680;
    # output 65,792; classifier 32,896 + 8,256 + 1,495.
    head = module.TaskNet([512, 512], 23)
    assert count_parameters(head) == 262_656 + 2 * 263_680 + 65_792 + 32_896 + 8_256 + 1_495 == 898_455
    assert head([torch.randn(3, 512), torch.randn(3, 512)]).shape == (3, 23)


def test_parameter_count_at_avmnist_sizes_before_and_after_the_boundary():
    model = make_cls(classification_task(n_classes=10), k=64, head_width=256)
    head = count_parameters(model.head)
    # encoders 1,390 + 10,412; unimodal classifiers 161·10 + 321·10; head at width 256 with 160 + 320 inputs
    assert head == 160 * 256 + 320 * 256 + 2 * 256 + 2 * 263_680 + 65_792 + 32_896 + 8_256 + 650 == 758_346
    assert count_parameters(model) == 1_390 + 10_412 + 1_610 + 3_210 + head == 774_968
    x, y = tiny_classification_batch(model.task, batch=20)
    fit(model, x, torch.ones(20, 2, dtype=torch.bool), y)
    assert count_parameters(model) == 758_346  # the encoders and their classifiers are frozen


def test_defaults_are_the_papers_and_training_differs_per_task():
    assert UL4M4.defaults["k"] == 64 and UL4M4.defaults["iterations"] == 50
    cls = UL4M4.training_for("classification")
    assert (cls.optimizer, cls.lr, cls.schedule, cls.dropout) == ("adam", 1e-3, "constant", "full")
    assert UL4M4.training_for("segmentation") == method_class("mean_fill").training_for("segmentation")
    assert_shaspec_segmentation_training(UL4M4.training_for("segmentation"))  # both ShaSpec's, not merely equal
    model = make_cls()
    assert model.output == "labels" and model.stage_steps(100) == [50] and model.stage_steps(2) == [1]
    assert sum(p.numel() for p in model.imputer.parameters()) == 0


def test_stage_one_trains_unimodal_classifiers_then_stage_two_only_the_head():
    model = make_cls()
    x, y = tiny_classification_batch(model.task, batch=16)
    available = availability(16)
    zeroed = zero_inputs(x, available)
    out = model(zeroed, available, y)
    assert set(out.losses) == {"unimodal"} and torch.equal(out.logits, torch.zeros(16, 4))  # no UL4M4 model yet
    out.losses["unimodal"].backward()
    assert model.encoders[0].net[0].weight.grad is not None and all(p.grad is None for p in model.head.parameters())
    model.zero_grad(set_to_none=True)
    fit(model, x, available, y)
    assert model.fitted and not model.encoders[0].training and model.head.training
    out = model(zeroed, available, y)
    assert set(out.losses) == {"ce"}
    out.losses["ce"].backward()
    assert all(p.grad is None for p in model.encoders.parameters()) and all(p.grad is None for p in model.unimodal.parameters())
    assert all(p.grad is not None for p in model.head.parameters())


def test_loss_falls_in_both_stages_on_a_toy_problem():
    model = make_cls()
    x, y = tiny_classification_batch(model.task, batch=16)
    available = availability(16)
    zeroed = zero_inputs(x, available)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def steps(n):
        history = []
        for _ in range(n):
            loss = sum(model(zeroed, available, y).losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(loss.item())
        return history

    stage1 = steps(40)
    fit(model, x, available, y)
    stage2 = steps(40)
    assert stage1[-1] < 0.5 * stage1[0] and stage2[-1] < 0.5 * stage2[0]


def test_fitted_stage_survives_a_state_dict_round_trip():
    model = make_cls()
    x, y = tiny_classification_batch(model.task)
    available = availability(8)
    fit(model, x, available, y)
    fresh = make_cls()
    assert not fresh.fitted
    fresh.load_state_dict(model.state_dict())
    fresh.train()
    assert fresh.fitted and not fresh.encoders[1].training  # frozen encoders stay in eval mode
    model.eval(), fresh.eval()
    zeroed = zero_inputs(x, available)
    with torch.no_grad():
        torch.testing.assert_close(model(zeroed, available).logits, fresh(zeroed, available).logits)


def test_fit_is_deterministic_given_the_seed():
    a, b = make_cls(), make_cls()
    x, y = tiny_classification_batch(a.task)
    available = availability(8)
    fit(a, x, available, y)
    fit(b, x, available, y)
    assert a.kmeans_seed == b.kmeans_seed
    assert all(torch.equal(u, v) for u, v in zip(a.imputer.state_dict().values(), b.imputer.state_dict().values()))


@pytest.mark.parametrize("fitted", [False, True])
def test_missing_inputs_cannot_leak_on_classification(fitted):
    task = classification_task(("image", "audio", "table"))
    torch.manual_seed(0)
    model = UL4M4(task, tuple(task.inputs), k=4, head_width=16)
    if fitted:
        x, y = tiny_classification_batch(task)
        fit(model, x, availability(8, 3), y)
    model.eval()
    assert_classification_ignores_missing(model, task, masks_itself=True)


def make_seg(task, fitted: bool = True):
    torch.manual_seed(0)
    model = UL4M4(task, MODS, width=4, depth=2, k=8)
    if fitted:
        x, y = tiny_batch()
        available = torch.tensor([[True, False, True, False], [False, True, True, True]])
        model.eval()
        model.fit_stage(0, lambda: iter([(zero_inputs(x, available), available, y)]))
    return model.eval()


def test_segmentation_imputes_the_bottleneck_per_voxel(task):
    model = make_seg(task)
    # 2 patches of 16³ at depth 2: 4³ bottleneck voxels each, 128 samples of 16 channels; k capped at 8
    assert model.imputer.dims == [16] * 4 and int(model.imputer.centre_present.any(1).sum()) == 8
    x, _ = tiny_batch()
    available = torch.tensor([[True, False, False, False], [False, False, True, True]])
    feats = model.encode(zero_inputs(x, available))
    maps = torch.stack([f.bottleneck for f in feats], 1)
    filled = model._impute_bottleneck(maps, available)
    assert filled.shape == maps.shape
    torch.testing.assert_close(filled[available], maps[available])
    # voxel (b, :, i, j, k) of a missing modality is the imputer's completion of that voxel's vectors
    b, i, j, k = 1, 2, 0, 3
    vectors = [maps[b : b + 1, m, :, i, j, k] for m in range(4)]
    expected = model.imputer(vectors, available[b : b + 1])
    for m in range(4):
        torch.testing.assert_close(filled[b, m, :, i, j, k], expected[m][0])


@pytest.mark.parametrize("fitted", [False, True])
def test_segmentation_every_pattern_ignores_missing_and_shares_encoding(task, fitted):
    model = make_seg(task, fitted)
    assert_every_pattern_ignores_missing(model, 3, masks_itself=True)
    assert_shared_encoding_matches(model)


def test_segmentation_loss_falls_in_stage_one(task):
    torch.manual_seed(0)
    history = toy_losses(UL4M4(task, MODS, width=4, depth=2))
    assert history[-1]["total"] < 0.6 * history[0]["total"]


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="stage_fraction"):
        make_cls(stage_fraction=1.0)
    with pytest.raises(ValueError, match="k=0"):
        make_cls(k=0)
    with pytest.raises(ValueError, match="unknown parameter 'kk'"):
        make_cls(kk=3)


def test_a_run_killed_at_the_stage_boundary_resumes_to_the_same_weights_and_centres(tmp_path, monkeypatch):
    """The smoke budget's boundary is iteration 2, where the helper kills the run (while the stage's
    patches are drawn): the resumed run refits from the checkpoint and ends where the whole run does."""
    from conftest import run_killed_then_resumed, smoke_spec

    whole, resumed = run_killed_then_resumed(smoke_spec("ul4m4"), tmp_path, monkeypatch)
    a, b = (torch.load(d / "checkpoint.pt", weights_only=False)["model"] for d in (whole, resumed))
    assert bool(a["imputer.fitted"]) and a["imputer.centre_present"].any()
    assert all(torch.equal(a[k], b[k]) for k in a)
