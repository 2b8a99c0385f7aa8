import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import (
    MODS, assert_classification_ignores_missing, assert_every_pattern_ignores_missing, assert_shared_encoding_matches,
    assert_shaspec_segmentation_training, classification_task, tiny_batch, tiny_classification_batch, toy_losses,
)
from missbench.core.availability import zero_inputs
from missbench.core.method import count_parameters
from missbench.experiment.registry import method_class
from missbench.core.tasks import get_task

SMIL = method_class("smil")
AVMNIST = {"image": ("image", (1, 28, 28)), "audio": ("spectrogram", (1, 20, 20))}


def avmnist_model(**params):
    torch.manual_seed(0)
    return SMIL(get_task("classification", n_classes=10, inputs=AVMNIST), ("image", "audio"), **params)


def audio_missing(batch: int) -> torch.Tensor:
    """Images always there, audio for the first quarter of the batch only (the audio_rate setting)."""
    available = torch.ones(batch, 2, dtype=torch.bool)
    available[batch // 4 :, 1] = False
    return available


def fitted(model, x, available, y):
    """``model`` after its stage, fitted on one batch."""
    model.eval()
    model.fit_stage(0, lambda: iter([(x, available, y)]))
    return model.train()


def test_parameter_count_at_avmnist_sizes():
    # Encoders 1,390 + 10,412; fusion head 31,434; uni-modal heads 5,482 + 10,602; fc0 1,610 + 3,210;
    # fc1 77,280 + 154,080; fc2 30,784. SMIL's code counts 324,688 (0.325M) with its unused heads.
    x = [torch.randn(8, 1, 28, 28), torch.randn(8, 1, 20, 20)]
    available = audio_missing(8)
    model = avmnist_model()
    assert count_parameters(model) == 326_284
    fitted(model, x, available, torch.arange(8))
    assert not model.frozen.any() and count_parameters(model) == 326_284  # the code meta-trains every parameter
    frozen = fitted(avmnist_model(freeze="missing"), x, available, torch.arange(8))
    assert frozen.frozen.tolist() == [False, True]  # the modality that goes missing: extractor_grad=False's audio encoder
    assert count_parameters(frozen) == 326_284 - 10_412


def test_fit_stage_fills_priors_and_survives_a_state_dict_round_trip():
    task = classification_task()
    model = SMIL(task, tuple(task.inputs), k=3, freeze="missing")
    x, y = tiny_classification_batch(task, batch=12)
    available = torch.ones(12, 2, dtype=torch.bool)
    available[6:, 1] = False
    assert not model.net.fitted and model.stage_steps(100) == [30]
    fitted(model, x, available, y)
    with torch.no_grad():
        audio = model.net.encoders[1].eval()(x[1][:6])
    priors = model.net.recon.centroids(1)
    assert priors.shape == (3, 320) and priors.abs().sum() > 0
    # Every prior is the mean of the audio features nearest to it (a k-means fixed point), over samples with audio.
    nearest = torch.cdist(audio, priors).argmin(1)
    for j in nearest.unique():
        torch.testing.assert_close(priors[j], audio[nearest == j].mean(0), atol=1e-5, rtol=1e-5)
    clone = SMIL(task, tuple(task.inputs), k=3, freeze="missing")
    clone.load_state_dict(model.state_dict())
    assert clone.net.fitted and clone.frozen.tolist() == [False, True]
    torch.testing.assert_close(clone.net.recon.centroids(1), priors)
    assert not any(p.requires_grad for p in clone.net.encoders[1].parameters())
    assert clone.train().net.encoders[1].training  # frozen parameters, but the model's mode (the code's train-mode passes)


def test_reconstruction_and_perturbation_switch_from_noise_to_mean():
    task = classification_task()
    model = SMIL(task, tuple(task.inputs))
    x, y = tiny_classification_batch(task)
    fitted(model, x, torch.tensor([[True, True], [True, False]] * 4), y)
    available = torch.tensor([[True, False]] * 8)
    net = model.eval().net
    with torch.no_grad():
        feats = net.encode(x)
        # Evaluation: weights softplus(fc0(z_image)), the audio feature their weighted mean of the priors.
        w = F.softplus(net.recon.weights["1_0"](feats[0]))
        expected = w @ net.recon.centroids(1) / w.sum(1, keepdim=True)
        torch.testing.assert_close(net.complete(feats, available, "mean")[1], expected)
        # The code's fc0 has no noise; weight_noise=True draws it in training only.
        torch.testing.assert_close(net.complete(feats, available, "noise")[1], expected)
        net.weight_noise = True
        assert not torch.allclose(net.complete(feats, available, "noise")[1], expected)
        torch.testing.assert_close(net.complete(feats, available, "mean")[1], expected)
        # Fused-feature and hidden perturbations: random in training, softplus(mean) at evaluation, none when complete.
        mean_a, mean_b = net.decode(feats, available, "mean"), net.decode(feats, available, "mean")
        noise_a, noise_b = net.decode(feats, available, "noise"), net.decode(feats, available, "noise")
        clean = net.decode(feats, available, "off")
        torch.testing.assert_close(mean_a.fused, mean_b.fused)
        assert not torch.allclose(noise_a.fused, noise_b.fused) and not torch.allclose(noise_a.hidden, noise_b.hidden)
        torch.testing.assert_close(mean_a.fused - clean.fused, F.softplus(net.fused_noise[0](feats[0])))
        full = torch.ones_like(available)
        torch.testing.assert_close(net.decode(feats, full, "noise").fused, net.decode(feats, full, "off").fused)
        # The model's evaluation forward is the mean behaviour.
        torch.testing.assert_close(model.eval()(x, available).logits, mean_a.logits)


def test_meta_learning_losses_for_mixed_and_one_sided_batches():
    task = classification_task()
    model = SMIL(task, tuple(task.inputs))
    x, y = tiny_classification_batch(task)
    available = torch.tensor([[True, True]] * 3 + [[True, False]] * 3 + [[False, True]] * 2)
    fitted(model, x, available, y).set_step(57, 100)  # 3/8 into the meta stage (30..100)
    out = model(x, available, y)
    assert set(out.losses) == {"task", "outer_task", "fused_mse", "hidden_mse"} and out.logits.shape == (8, 4)
    sum(out.losses.values()).backward()
    assert model.net.recon.weights["1_0"].weight.grad.abs().sum() > 0
    assert model.net.hidden_noise.weight.grad.abs().sum() > 0
    # The outer loss sees the encoders and head after the inner SGD step (lr_inner 1e-3, x0.1 every eighth).
    assert model.inner_lr() == pytest.approx(1e-3 * 0.1**3)
    complete = torch.ones(8, 2, dtype=torch.bool)
    assert set(model(x, complete, y).losses) == {"task"}
    incomplete = torch.tensor([[True, False]] * 8)
    assert set(model(x, incomplete, y).losses) == {"task"}


def test_inner_step_is_differentiated_through():
    """The outer loss with adapted weights depends on the reconstruction heads through the inner gradient too."""
    task = classification_task()
    model = SMIL(task, tuple(task.inputs), inner_lr=1.0)
    x, y = tiny_classification_batch(task)
    available = torch.tensor([[True, True]] * 4 + [[True, False]] * 4)
    fitted(model, x, available, y).eval()  # no dropout: only the inner step differs between the two runs below
    outer = {}
    for lr in (1.0, 0.0):
        model.params["inner_lr"] = lr
        model.set_step(model.stage_steps(100)[0], 100)
        model.zero_grad()
        model._meta(x, available, y).losses["outer_task"].backward()
        outer[lr] = model.net.fused_noise[0].weight.grad.clone()
    assert not torch.allclose(outer[1.0], outer[0.0])


def test_missing_inputs_cannot_reach_the_output_before_and_after_the_stage():
    task = classification_task()
    model = SMIL(task, tuple(task.inputs)).eval()
    assert_classification_ignores_missing(model, task, masks_itself=True)
    x, y = tiny_classification_batch(task)
    fitted(model, x, torch.tensor([[True, True], [True, False]] * 4), y).eval()
    assert_classification_ignores_missing(model, task, masks_itself=True)
    # Shared encoding: the full inputs encoded once, decoded for one pattern, equal the zeroed forward.
    available = torch.tensor([[True, False]] * 8)
    with torch.no_grad():
        shared = model.decode(model.encode(x), available).logits
        plain = model([x[0], torch.zeros_like(x[1])], available).logits
    torch.testing.assert_close(shared, plain)


def test_loss_falls_on_a_toy_problem_through_both_stages():
    task = classification_task()
    torch.manual_seed(0)
    model = SMIL(task, tuple(task.inputs))
    x, y = tiny_classification_batch(task, batch=16)
    available = torch.ones(16, 2, dtype=torch.bool)
    available[4:, 1] = False
    x[1] = x[1] * available[:, 1, None, None, None]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    totals = []
    for step in range(40):
        if step == model.stage_steps(40)[0]:
            fitted(model, x, available, y)
        model.set_step(step, 40)
        total = sum(model(x, available, y).losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
    assert all(math.isfinite(t) for t in totals)
    assert totals[-1] < 0.6 * totals[model.stage_steps(40)[0]]
    with torch.no_grad():
        accuracy = (model.eval()(x, available).logits.argmax(1) == y).float().mean()
    assert accuracy == 1


def test_segmentation_reconstructs_at_the_bottleneck():
    task = get_task("segmentation")
    torch.manual_seed(0)
    model = SMIL(task, MODS, width=4, depth=2).eval()
    assert count_parameters(model) == 69_919
    assert_every_pattern_ignores_missing(model, 3, masks_itself=True)
    x, y = tiny_batch()
    available = torch.tensor([[True, False, True, False], [True, True, True, True]])
    fitted(model, zero_inputs(x, available), available, y)
    assert not model.frozen.any() and model.net.recon.centroids(1).abs().sum() > 0
    assert_every_pattern_ignores_missing(model.eval(), 3, masks_itself=True)
    assert_shared_encoding_matches(model)
    model.train().set_step(60, 100)
    out = model(zero_inputs(x, available), available, y)
    assert set(out.losses) == {"task", "outer_task", "fused_mse"} and out.logits.shape == (2, 3, 16, 16, 16)


def test_segmentation_loss_falls_before_the_stage():
    torch.manual_seed(0)
    history = toy_losses(SMIL(get_task("segmentation"), MODS, width=4, depth=2))
    assert history[-1]["total"] < 0.6 * history[0]["total"]


def test_training_defaults_are_the_code_on_classification_and_shaspec_on_segmentation():
    cls = SMIL.training_for("classification")
    settings = (cls.optimizer, cls.lr, cls.weight_decay, cls.schedule, cls.step_every, cls.step_gamma)
    assert settings == ("adam", 1e-3, 1e-4, "step", 0.3 + 0.7 * 0.625, 0.1)  # x0.1 at 5/8 of the meta stage
    assert_shaspec_segmentation_training(SMIL.training_for("segmentation"))  # ShaSpec's, as the other common-backbone methods


@pytest.mark.parametrize(("params", "match"), [({"freeze": "some"}, "freeze"), ({"pretrain_fraction": 1.5}, "pretrain_fraction"),
                                                ({"k": 0}, "k=0"), ({"gamma": 1}, "unknown parameter 'gamma'")])
def test_bad_parameter_is_refused(params, match):
    with pytest.raises(ValueError, match=match):
        SMIL(classification_task(), ("image", "audio"), **params)


def test_encoders_of_modalities_dropped_in_training_are_frozen_at_the_stage():
    """Under random dropping the stage's data has every modality, but training batches have dropped them."""
    task = classification_task()
    model = SMIL(task, tuple(task.inputs), freeze="missing").train()
    x, y = tiny_classification_batch(task)
    model(x, torch.tensor([[True, True]] * 4 + [[False, True]] * 4), y)
    fitted(model, x, torch.ones(8, 2, dtype=torch.bool), y)
    assert model.frozen.tolist() == [True, False]


def avmnist_after_stage(**params):
    """The avMNIST model past its stage, in training, with a batch whose last three quarters miss the audio."""
    model = avmnist_model(**params)
    g = torch.Generator().manual_seed(1)
    x = [torch.randn(16, 1, 28, 28, generator=g), torch.randn(16, 1, 20, 20, generator=g)]
    available, y = audio_missing(16), torch.arange(16) % 10
    x[1] = x[1] * available[:, 1, None, None, None]
    fitted(model, x, available, y).set_step(50, 100)
    return model, x, available, y


def test_meta_learning_trains_the_audio_encoder_through_the_outer_feature_mses():
    """The code's meta_training sets requires_grad on every parameter and its Adam covers them: the audio
    encoder learns from the outer loss (the clean pass's features in the MSEs), not from the inner CE."""
    model, x, available, y = avmnist_after_stage()
    audio = model.net.encoders[1]
    conv1 = next(audio.parameters())
    assert all(p.requires_grad for p in model.parameters())
    losses = model(x, available, y).losses
    mses = torch.autograd.grad(losses["fused_mse"] + losses["hidden_mse"], conv1, retain_graph=True)[0]
    inner = torch.autograd.grad(losses["task"], conv1, retain_graph=True, allow_unused=True)[0]
    assert mses.norm() > 0 and (inner is None or inner.abs().sum() == 0)
    sum(losses.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.net.encoders[0].parameters())
    assert conv1.grad.norm() > 0


def test_segmentation_meta_learning_reaches_every_encoder():
    torch.manual_seed(0)
    model = SMIL(get_task("segmentation"), MODS, width=4, depth=2)
    x, y = tiny_batch(batch=3)
    available = torch.tensor([[True, False, True, False], [True, True, False, True], [True] * 4])
    x = zero_inputs(x, available)
    fitted(model, x, available, y).set_step(60, 100)
    sum(model(x, available, y).losses.values()).backward()
    for m, enc in enumerate(model.net.encoders):
        assert sum(p.grad.abs().sum() for p in enc.parameters() if p.grad is not None) > 0, MODS[m]


@pytest.mark.parametrize("freeze", ["none", "missing"])
def test_meta_passes_run_in_train_mode_on_a_copy_of_the_running_statistics(freeze):
    """ProtoModule.functional(params, True): batch statistics and dropout in every meta pass, frozen encoders
    included; its deep copy keeps its own running statistics, so the evaluated network's stay as they were."""
    model, x, available, y = avmnist_after_stage(freeze=freeze)
    seen = []

    def record(module, args, out):
        seen.append((module, module.training, args[0].detach(), out.detach()))

    handles = [mod.register_forward_hook(record) for mod in model.net.modules() if isinstance(mod, (nn.BatchNorm2d, nn.Dropout))]
    running = {n: b.clone() for n, b in model.net.named_buffers()}
    model(x, available, y)
    for h in handles:
        h.remove()
    assert seen and all(training for _, training, _, _ in seen)
    for name, b in model.net.named_buffers():
        torch.testing.assert_close(b, running[name], msg=name)
    # In the clean pass (the complete samples' real audio) the audio encoder's first batch norm uses batch statistics.
    complete = int(available.all(1).sum())
    bn, _, inp, out = next(s for s in seen if isinstance(s[0], nn.BatchNorm2d) and len(s[2]) == complete)
    mean, var = inp.mean((0, 2, 3), keepdim=True), inp.var((0, 2, 3), unbiased=False, keepdim=True)
    expected = (inp - mean) / (var + bn.eps).sqrt() * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
