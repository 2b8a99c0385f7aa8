import math

import pytest
import torch

from conftest import MODS, assert_every_pattern_ignores_missing, assert_shaspec_segmentation_training, tiny_batch, toy_losses
from missbench.core.availability import zero_inputs
from missbench.core.method import count_parameters
from missbench.experiment.registry import method_class
from missbench.core.subsets import all_subsets

ShaSpec = method_class("shaspec")


def make(task, **params):
    torch.manual_seed(0)
    return ShaSpec(task, MODS, width=4, depth=2, **params).eval()


def fused_bottleneck(model, x, available):
    """The decoder's bottleneck input, captured with a forward pre-hook."""
    seen = {}
    handle = model.decoder.register_forward_pre_hook(lambda mod, args: seen.update(b=args[0]))
    with torch.no_grad():
        model(x, available)
    handle.remove()
    return seen["b"].view(x.shape[0], len(MODS), -1, *seen["b"].shape[2:])


@pytest.mark.parametrize("fill", ["mean", "first"])
def test_missing_modality_is_filled_from_available_shared_features(task, fill):
    model = make(task, fill=fill)
    x, _ = tiny_batch()
    available = torch.tensor([[True, False, True, False], [False, False, False, True]])
    x = zero_inputs(x, available)
    fused = fused_bottleneck(model, x, available)
    with torch.no_grad():
        shared = torch.stack([f[0].bottleneck for f in model.encode(x)], 1)
    for b in range(2):
        kept = available[b].nonzero().flatten()
        expected = shared[b, kept].mean(0) if fill == "mean" else shared[b, kept[0]]
        for m in (~available[b]).nonzero().flatten():
            torch.testing.assert_close(fused[b, m], expected)
    # Sample 2 has one modality: every slot holds its feature (mean and first agree).
    torch.testing.assert_close(fused[1, 0], shared[1, 3])


def test_missing_input_cannot_change_the_output(task):
    """Through the harness: ShaSpec, like its code, concatenates every modality's shared skip maps, so it relies
    on the harness's zeroing of missing inputs (its raw forward does read them)."""
    model = make(task)
    assert_every_pattern_ignores_missing(model, 3)
    x, _ = tiny_batch()
    available = torch.tensor([[True, False, True, False], [True, True, False, True]])
    with torch.no_grad():
        assert not torch.allclose(model(x, available).logits, model(x + 5 * (~available)[..., None, None, None], available).logits)


def test_loss_terms_are_named_weighted_and_masked(task):
    model = make(task, alpha=0.1, beta=0.02)
    x, y = tiny_batch()
    available = torch.ones(2, 4, dtype=torch.bool)
    out = model.training_output(x, available, y)
    assert set(out.losses) == {"dice", "bce", "dao", "dco"}
    assert all(torch.isfinite(v) and v >= 0 for v in out.losses.values())
    feats = model.encode(x)
    shared = torch.stack([f[0].bottleneck for f in feats], 1)
    cycle = sum((shared[:, i] - shared[:, (i + 1) % 4]).abs().mean() for i in range(4))  # the code's 0-1,1-2,2-3,3-0
    torch.testing.assert_close(out.losses["dao"], 0.1 * cycle)
    logits = model.dco_head(torch.stack([f[1].pooled for f in feats], 1))
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.arange(4).repeat(2))
    torch.testing.assert_close(out.losses["dco"], 0.02 * ce)
    # One available modality: no pair to align (paper); the code's "all" still aligns the zero inputs.
    single = torch.tensor([[False, False, True, False]] * 2)
    assert model(zero_inputs(x, single), single, y).losses["dao"] == 0
    assert make(task, aux_over="all")(zero_inputs(x, single), single, y).losses["dao"] > 0


def test_dao_cycle_over_the_available_modalities_counts_a_lone_pair_twice(task):
    """The code's cycle (train_SS.py ``term_shared``) over two modalities is (i,j),(j,i): twice the pair's L1."""
    model = make(task, alpha=1.0)
    x, y = tiny_batch()
    available = torch.tensor([[True, False, False, True], [False, True, True, True]])
    x = zero_inputs(x, available)
    with torch.no_grad():
        shared = torch.stack([f[0].bottleneck for f in model.encode(x)], 1)
        dao = model(x, available, y).losses["dao"]
    l1 = lambda b, i, j: (shared[b, i] - shared[b, j]).abs().mean()  # noqa: E731
    expected = (2 * l1(0, 0, 3) + l1(1, 1, 2) + l1(1, 2, 3) + l1(1, 3, 1)) / 2
    torch.testing.assert_close(dao, expected)
    # KL over two modalities: both directions, the symmetric KL.
    kl = make(task, alpha=1.0, dao="kl")
    with torch.no_grad():
        pooled = torch.stack([f[0].pooled for f in kl.encode(x)], 1)
        logp = torch.log_softmax(kl.dao_head(pooled[:1]), -1)[0]
        got = kl.dao_loss(shared[:1], pooled[:1], available[:1])
    pair = lambda i, j: torch.nn.functional.kl_div(logp[j], logp[i], log_target=True, reduction="sum")  # noqa: E731
    torch.testing.assert_close(got, pair(0, 3) + pair(3, 0))


@pytest.mark.parametrize("dao", ["l1", "kl", "mse", "ce"])
def test_every_dao_variant_is_finite(task, dao):
    x, y = tiny_batch()
    available = torch.tensor([[True, True, False, True], [True, False, True, False]])
    loss = make(task, dao=dao)(zero_inputs(x, available), available, y).losses["dao"]
    assert torch.isfinite(loss) and loss >= 0


def test_bad_parameter_is_refused(task):
    with pytest.raises(ValueError, match="dao"):
        ShaSpec(task, MODS, dao="l2")
    with pytest.raises(ValueError, match="unknown parameter 'gamma'"):
        ShaSpec(task, MODS, gamma=1)


def test_loss_falls_on_a_toy_problem(task):
    history = toy_losses(make(task))
    assert all(math.isfinite(v) for step in history for v in step.values())
    assert history[-1]["total"] < 0.6 * history[0]["total"]


def test_forward_with_every_availability_pattern(task):
    model = make(task)
    x, _ = tiny_batch(batch=1)
    for s in all_subsets(MODS):
        available = torch.tensor([s.mask])
        with torch.no_grad():
            out = model(zero_inputs(x, available), available)
        assert out.logits.shape == (1, 3, 16, 16, 16)


def test_official_backbone_has_the_code_parameter_count(task):
    model = ShaSpec(task, MODS, backbone="official")
    assert count_parameters(model) == 187_708_132


# Classification (issue #4): the paper's avMNIST model.
def test_classification_parameter_count_at_avmnist_sizes():
    from missbench.core.tasks import get_task

    task = get_task("classification", n_classes=10, inputs={"image": ("image", (1, 28, 28)), "audio": ("spectrogram", (1, 20, 20))})
    # specific 27,150 + 61,772, shared 27,150, proj 51,200, decoder 21,194, DCO 322 (the paper: "0.22M").
    assert count_parameters(ShaSpec(task, ("image", "audio"))) == 188_788
    cfg = ShaSpec.training_for("classification")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.schedule, cfg.step_every, cfg.step_gamma) == ("adam", 1e-3, 1e-2, "step", 1 / 3, 0.9)
    assert_shaspec_segmentation_training(ShaSpec.training_for("segmentation"))  # the paper's, written out in conftest.py
    with pytest.raises(ValueError, match="segmentation network"):
        ShaSpec(task, ("image", "audio"), backbone="official")


def test_classification_fills_missing_from_shared_vectors_and_ignores_missing_inputs():
    from conftest import assert_classification_ignores_missing, classification_task, tiny_classification_batch

    task = classification_task(("image", "audio", "table"))
    torch.manual_seed(0)
    model = ShaSpec(task, tuple(task.inputs), dim=16).eval()
    assert_classification_ignores_missing(model, task, masks_itself=True)
    x, _ = tiny_classification_batch(task, batch=2)
    available = torch.tensor([[True, False, True], [False, True, False]])
    fused = {}
    handle = model.decoder.register_forward_pre_hook(lambda mod, args: fused.update(v=args[0].view(2, 3, 16)))
    with torch.no_grad():
        model(x, available)
        shared = torch.stack([f[0].bottleneck for f in model.encode(x)], 1)
    handle.remove()
    torch.testing.assert_close(fused["v"][0, 1], shared[0, [0, 2]].mean(0))
    torch.testing.assert_close(fused["v"][1, 0], shared[1, 1])
    assert ShaSpec(task, tuple(task.inputs), dim=16).feature_views(x)["shared"].shape == (2, 3, 16)


def test_classification_loss_falls_on_a_toy_problem():
    from conftest import classification_task, classification_toy_losses

    task = classification_task()
    torch.manual_seed(0)
    history = classification_toy_losses(ShaSpec(task, tuple(task.inputs)), task)
    assert all(math.isfinite(v) for v in history) and history[-1] < 0.6 * history[0]
