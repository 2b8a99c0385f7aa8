import math
import sys

import pytest
import torch

from conftest import assert_classification_ignores_missing, classification_task, classification_toy_losses, tiny_classification_batch
from missbench.core.availability import zero_inputs
from missbench.core.method import count_parameters
from missbench.experiment.registry import method_class

CMML = method_class("cmml")
module = sys.modules[CMML.__module__]


def make(task=None, **params):
    torch.manual_seed(0)
    task = task or classification_task()
    return CMML(task, tuple(task.inputs), **params)


def test_parameter_count_at_avmnist_sizes_and_declared_as_a_reconstruction():
    task = classification_task(n_classes=10)
    model = make(task)
    # encoders 1,390 + 10,412; projections 160·64+64 + 320·64+64; per CRTA block 2 LN (256) + attention
    # (4·64·64 + 256) + autoencoder (64·32+32 + 32·64+64); reference and alignment attention + LN
    # 2 x (16,640 + 128); contrastive projection 4,160; classifier 64·64+64 + 64·10+10; modality
    # embeddings 128, mask token 64, context tokens 256.
    assert count_parameters(model) == 11_802 + 30_848 + 2 * 21_088 + 2 * 16_768 + 4_160 + 4_810 + 448 == 127_780
    assert "reconstruction" in CMML.citation and "RECONSTRUCTION" in sys.modules[CMML.__module__].__doc__
    assert CMML.tasks == ("classification",)
    with pytest.raises(ValueError, match="does not support task 'segmentation'"):
        from missbench.core.tasks import get_task
        CMML(get_task("segmentation"), ("FLAIR", "T1", "T1c", "T2"))


def test_losses_and_shapes():
    model = make().train()
    x, y = tiny_classification_batch(model.task)
    available = torch.tensor([[True, True], [True, False], [False, True], [True, True]] * 2)
    out = model.training_output(zero_inputs(x, available), available, y)
    assert out.logits.shape == (8, 4)
    assert set(out.losses) == {"ce", "rec", "align", "con"}
    assert all(torch.isfinite(v) for v in out.losses.values())
    assert set(make(rec_weight=0, con_weight=0).training_output(zero_inputs(x, available), available, y).losses) == {"ce", "align"}


def test_supervised_contrastive_by_hand():
    # two unit vectors of class 0 at 90 degrees and one of class 1 equal to the first; temperature 1.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    # anchor 0: logits to (1, 2) = (0, 1); positive is 1: -log(e^0/(e^0+e^1)) = log(1 + e)
    # anchor 1: logits to (0, 2) = (0, 0); positive is 0: log 2. Anchor 2 has no positive.
    expected = torch.tensor((math.log(1 + math.e) + math.log(2)) / 2)
    torch.testing.assert_close(module.supervised_contrastive(z, labels, 1.0), expected)
    assert module.supervised_contrastive(z, torch.tensor([0, 1, 2]), 1.0) == 0


def test_memory_banks_hold_class_means_of_available_features_and_update_only_in_training():
    model = make(momentum=0.5)
    real = torch.tensor([[[1.0] * 64, [2.0] * 64], [[3.0] * 64, [9.0] * 64]])
    available = torch.tensor([[True, True], [True, False]])
    model.update_banks(real, available, torch.tensor([1, 1]))
    torch.testing.assert_close(model.prototypes[0, 1], torch.full((64,), 2.0))  # mean of 1 and 3
    torch.testing.assert_close(model.prototypes[1, 1], torch.full((64,), 2.0))  # the missing 9 is not read
    assert model.bank_ready.sum() == 2
    model.update_banks(real[:1], available[:1], torch.tensor([1]))
    torch.testing.assert_close(model.prototypes[0, 1], torch.full((64,), 1.5))  # 0.5·2 + 0.5·1
    x, y = tiny_classification_batch(model.task)
    before = model.prototypes.clone()
    model.eval()
    with torch.no_grad():
        model(x, torch.ones(8, 2, dtype=torch.bool), y)
    assert torch.equal(model.prototypes, before)


def test_an_empty_bank_adds_nothing_and_a_filled_one_adds_a_prototype_mixture():
    model = make()
    q = torch.randn(3, 2, 64)
    assert torch.equal(model.retrieve(q), torch.zeros(3, 2, 64))
    model.prototypes[0, 2] = 5.0
    model.bank_ready[0, 2] = True
    got = model.retrieve(q)
    torch.testing.assert_close(got[:, 0], torch.full((3, 64), 5.0))  # the only filled prototype, weight 1
    assert torch.equal(got[:, 1], torch.zeros(3, 64))


def test_loss_falls_on_a_toy_problem():
    model = make()
    history = classification_toy_losses(model, model.task, steps=50)
    assert history[-1] < 0.5 * history[0]


def test_missing_inputs_cannot_leak_even_unzeroed_after_the_banks_fill():
    task = classification_task(("image", "audio", "table"))
    model = make(task).train()
    x, y = tiny_classification_batch(task)
    model(x, torch.ones(8, 3, dtype=torch.bool), y)  # fills the banks
    model.eval()
    assert_classification_ignores_missing(model, task, masks_itself=True)


def test_state_dict_round_trip_carries_the_banks():
    model = make().train()
    x, y = tiny_classification_batch(model.task)
    model(x, torch.ones(8, 2, dtype=torch.bool), y)
    fresh = make()
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.prototypes, model.prototypes) and torch.equal(fresh.bank_ready, model.bank_ready)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="width=30"):
        make(width=30)
    with pytest.raises(ValueError, match="temperature=0"):
        make(temperature=0)
