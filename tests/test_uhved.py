import itertools
import sys

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from conftest import (
    MODS, assert_every_pattern_ignores_missing, assert_shared_encoding_matches, direct_poe, run_killed_then_resumed, smoke_spec,
    tiny_batch,
    toy_losses,
)
from missbench.core.availability import zero_inputs
from missbench.core.method import count_parameters
from missbench.experiment.registry import method_class

UHVED = method_class("uhved")
module = sys.modules[UHVED.__module__]


def make(task, **params):
    torch.manual_seed(0)
    return UHVED(task, MODS, **{"width": 4, "depth": 2, **params}).eval()


def test_gaussian_kl_is_the_closed_form_kl():
    torch.manual_seed(0)
    mu1, lv1, mu2, lv2 = torch.randn(4, 1000, dtype=torch.float64)
    expected = kl_divergence(Normal(mu1, (0.5 * lv1).exp()), Normal(mu2, (0.5 * lv2).exp()))
    torch.testing.assert_close(module.gaussian_kl(mu1, lv1, mu2, lv2), expected, rtol=1e-5, atol=1e-6)


def direct_kl(mus, logvars, kept, subsets):
    """The code's compute_KLD for one sample, averaged over the scales, from torch.distributions."""
    total = 0
    for mu, logvar in zip(mus, logvars):  # M x C x ...
        def q(idx):
            m, v = direct_poe(mu, logvar.exp(), idx)
            return Normal(m, v.sqrt())

        full = q(kept)
        inter = [kl_divergence(full, q(s)).mean() for s in subsets]
        prior = [kl_divergence(q(s), Normal(0.0, 1.0)).mean() for s in subsets]
        total += (sum(inter) / (len(subsets) - 1) if len(subsets) > 1 else 0) + sum(prior) / len(subsets)
    return total / len(mus)


@pytest.mark.parametrize("kl_over", ["available", "all"])
def test_kl_term_is_the_code_compute_kld(task, kl_over):
    model = make(task, kl_over=kl_over)
    torch.manual_seed(1)
    mus = [torch.randn(3, 4, c, 2, 2, 2, dtype=torch.float64) for c in (2, 3)]
    logvars = [torch.randn(3, 4, c, 2, 2, 2, dtype=torch.float64) for c in (2, 3)]
    available = torch.tensor([[True, True, True, True], [True, False, True, False], [False, False, False, True]])
    loss = model.kl_loss(mus, logvars, available)
    every = [list(c) for k in range(1, 5) for c in itertools.combinations(range(4), k)]
    expected = []
    for b in range(3):
        kept = available[b].nonzero().flatten().tolist()
        subsets = every if kl_over == "all" else [s for s in every if set(s) <= set(kept)]
        expected.append(direct_kl([m[b] for m in mus], [v[b] for v in logvars], kept, subsets))
    torch.testing.assert_close(loss, torch.stack(expected).mean(), rtol=1e-5, atol=1e-6)
    # all modalities present: both readings are the code's 1/14 and 1/15 over the 15 subsets
    full = torch.ones(1, 4, dtype=torch.bool)
    torch.testing.assert_close(model.kl_loss([m[:1] for m in mus], [v[:1] for v in logvars], full),
                               direct_kl([m[0] for m in mus], [v[0] for v in logvars], [0, 1, 2, 3], every), rtol=1e-5, atol=1e-6)


def latent_input(model, x, available):
    seen = {}
    handle = model.seg_decoder.register_forward_pre_hook(lambda mod, args: seen.update(z=args[0]))
    with torch.no_grad():
        model(x, available)
    handle.remove()
    return seen["z"]


def test_posterior_mean_at_evaluation_and_a_reparameterised_sample_in_training(task):
    model = make(task)
    x, _ = tiny_batch()
    available = torch.tensor([[True, False, True, False], [False, False, False, True]])
    x = zero_inputs(x, available)
    with torch.no_grad():
        feats = model.encode(x)
    posts = [module.product_of_experts(torch.stack([f.mu[k] for f in feats], 1), torch.stack([f.logvar[k] for f in feats], 1), available)
             for k in range(4)]
    for z, (mu, _) in zip(latent_input(model, x, available), posts):
        torch.testing.assert_close(z, mu)
    model.train()
    model.set_step(7, 10)
    sample = latent_input(model, x, available)
    eps = torch.cat([((z - mu) / (0.5 * lv).exp()).flatten() for z, (mu, lv) in zip(sample, posts)])
    assert abs(eps.mean()) < 0.1 and abs(eps.std() - 1) < 0.1  # standard-normal noise, scaled by the posterior std
    # the noise is a function of the seed and the trainer's iteration: a resumed run draws the same
    for z, again in zip(sample, latent_input(model, x, available)):
        torch.testing.assert_close(z, again)
    model.set_step(8, 10)
    assert not torch.equal(sample[0], latent_input(model, x, available)[0])
    # the code's segmentation inference samples
    sampled = make(task, inference="sample")
    assert not torch.equal(latent_input(sampled, x, available)[0], posts[0][0])


def test_log_variances_are_clipped_to_50(task):
    model = make(task)
    last = model.encoders[0].blocks[0][-1]
    with torch.no_grad():
        last.weight.mul_(1e6)
        feats = model.encode(torch.randn(1, 4, 16, 16, 16))
    lv = feats[0].logvar[0]
    assert lv.max() == 50 and lv.min() == -50
    assert feats[0].mu[0].abs().max() > 50  # means are not clipped


@pytest.mark.parametrize("backbone", ["paper", "common"])
def test_forward_with_every_availability_pattern_ignores_missing_inputs(task, backbone):
    model = make(task, backbone=backbone)
    assert_every_pattern_ignores_missing(model, 4, masks_itself=True)


@pytest.mark.parametrize("backbone", ["paper", "common"])
def test_shared_encoding_equals_one_pass_per_subset(task, backbone):
    model = make(task, backbone=backbone)
    assert_shared_encoding_matches(model)


def test_loss_terms_and_reconstruction_over_available_modalities(task):
    model = make(task)
    x, y = tiny_batch()
    available = torch.tensor([[True, False, False, True], [False, True, True, True]])
    xz = zero_inputs(x, available)
    out = model.training_output(xz, available, y)
    assert set(out.losses) == {"ce", "dice", "kl", "recon", "l2"}
    assert all(torch.isfinite(v) and v >= 0 for v in out.losses.values())
    z = latent_input(model, xz, available)
    with torch.no_grad():
        recon = torch.cat([dec(z) for dec in model.image_decoders], 1)
    sq = [((recon[b, m] - x[b, m]) ** 2).mean() for b in range(2) for m in range(4) if available[b, m]]
    torch.testing.assert_close(out.losses["recon"], 0.1 * torch.stack(sq).mean())
    with torch.no_grad():
        feats = model.encode(xz)
    mus = [torch.stack([f.mu[k] for f in feats], 1) for k in range(4)]
    logvars = [torch.stack([f.logvar[k] for f in feats], 1) for k in range(4)]
    torch.testing.assert_close(out.losses["kl"], 0.1 * model.kl_loss(mus, logvars, available))
    off = make(task, kl_weight=0, recon_weight=0, l2=0).training_output(xz, available, y)
    assert set(off.losses) == {"ce", "dice"}


def test_loss_falls_on_a_toy_problem(task):
    history = toy_losses(make(task), steps=30)
    assert history[-1]["total"] < 0.6 * history[0]["total"]
    assert history[-1]["recon"] < history[0]["recon"]


def test_killed_run_resumes_with_the_same_sampling_noise(tmp_path, monkeypatch):
    """The reparameterisation noise follows (seed, iteration), so a resumed run ends with the same weights."""
    whole, resumed = run_killed_then_resumed(smoke_spec("uhved"), tmp_path, monkeypatch)
    a, b = (torch.load(d / "checkpoint.pt", weights_only=False)["model"] for d in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_paper_width_has_the_code_parameter_count(task):
    model = UHVED(task, MODS)
    assert model.encoders[0].out_channels == [8, 16, 32, 64] and model.latent_channels == [4, 8, 16, 32]
    assert count_parameters(model.encoders[0]) == 221_560
    assert count_parameters(model.seg_decoder) == 72_872
    assert count_parameters(model.image_decoders[0]) == 72_860
    assert count_parameters(model) == 1_250_552  # 1.25M
    cfg = UHVED.training_defaults["segmentation"]
    assert (cfg.optimizer, cfg.lr, cfg.dropout, cfg.warmup_fraction) == ("adam", 1e-3, "count_then_subset", 0.0)


def test_bad_parameter_is_refused(task):
    with pytest.raises(ValueError, match="inference"):
        UHVED(task, MODS, inference="median")
    with pytest.raises(ValueError, match="kl_over"):
        UHVED(task, MODS, kl_over="some")
    with pytest.raises(ValueError, match="unknown parameter 'beta'"):
        UHVED(task, MODS, beta=1)


def test_common_backbone_splits_unet_maps_into_means_and_log_variances(task):
    model = UHVED(task, MODS, backbone="common")
    assert count_parameters(model) == 1_000_768  # U-Net width 8, depth 3; halves of each map are mu and logvar
    assert model.latent_channels == [4, 8, 16, 32]


def test_classification_product_of_experts_over_feature_vectors():
    from conftest import assert_classification_ignores_missing, classification_task, classification_toy_losses, tiny_classification_batch

    task = classification_task(("image", "audio", "table"), n_classes=10)
    torch.manual_seed(0)
    model = UHVED(task, tuple(task.inputs)).eval()
    # encoders 1,390 + 10,412 + 4,608, each + Linear(·, 128); head 64·64+64 + 64·10+10;
    # reconstruction MLPs 64·256+256 + 256·D+D for D = 784, 400, 6
    recon = sum(64 * 256 + 256 + 256 * d + d for d in (784, 400, 6))
    assert count_parameters(model) == 1_390 + 10_412 + 4_608 + (160 + 320 + 64) * 128 + 3 * 128 + 4_160 + 650 + recon
    x, y = tiny_classification_batch(task)
    available = torch.tensor([[True, False, True], [False, True, False]] * 4)
    feats = model.encode(x)
    assert feats[0].mu[0].shape == (8, 64) and feats[1].logvar[0].shape == (8, 64)
    seen = {}
    handle = model.seg_decoder.register_forward_pre_hook(lambda mod, args: seen.update(z=args[0]))
    with torch.no_grad():
        model(x, available)
    handle.remove()
    mus = torch.stack([f.mu[0] for f in feats], 1)
    logvars = torch.stack([f.logvar[0] for f in feats], 1)
    torch.testing.assert_close(seen["z"], module.product_of_experts(mus, logvars, available)[0])  # the posterior mean
    assert_classification_ignores_missing(model, task, masks_itself=True)
    out = model.train().training_output(x, available, y)
    assert set(out.losses) == {"ce", "kl", "recon"}
    history = classification_toy_losses(UHVED(task, tuple(task.inputs)), task)
    assert history[-1] < 0.5 * history[0]
