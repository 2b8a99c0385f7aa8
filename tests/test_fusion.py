"""Fusion over available modalities (missbench/nets/fusion.py): mean, HeMIS moments, product of experts.
Whatever a missing modality's slot holds, a NaN included, must not reach a result."""

import torch

from conftest import direct_poe
from missbench.nets.fusion import fill_missing_with_mean, moments_over_available, product_of_experts


def test_missing_features_are_the_mean_of_the_available_ones():
    maps = torch.randn(2, 4, 3, 5)
    available = torch.tensor([[True, False, True, False], [False, False, False, True]])
    out = fill_missing_with_mean(maps, available)
    torch.testing.assert_close(out[0, 1], (maps[0, 0] + maps[0, 2]) / 2)
    torch.testing.assert_close(out[0, 3], (maps[0, 0] + maps[0, 2]) / 2)
    torch.testing.assert_close(out[0, 2], maps[0, 2])
    assert all(torch.equal(out[1, m], maps[1, 3]) for m in range(4))


def test_fill_with_mean_never_reads_missing_features():
    feats = torch.randn(2, 3, 4)
    feats[0, 1] = float("nan")
    available = torch.tensor([[True, False, True], [False, True, False]])
    out = fill_missing_with_mean(feats, available)
    torch.testing.assert_close(out[0, 1], (feats[0, 0] + feats[0, 2]) / 2)
    assert torch.equal(out[1, 0], feats[1, 1]) and torch.equal(out[1, 2], feats[1, 1])


def test_moments_are_mean_and_population_variance_over_available_modalities_only():
    torch.manual_seed(0)
    maps = torch.randn(3, 4, 2, 5, 5, 5)
    available = torch.tensor([[True, False, True, True], [False, False, True, False], [True, True, True, True]])
    maps[~available] = float("nan")  # whatever a missing slot holds must not reach the result
    out = moments_over_available(maps, available)
    assert out.shape == (3, 4, 5, 5, 5)
    for b in range(3):
        kept = maps[b, available[b]]  # n x C x ...
        torch.testing.assert_close(out[b, :2], kept.mean(0))
        torch.testing.assert_close(out[b, 2:], kept.var(0, unbiased=False))  # tf.nn.moments: population variance
    assert torch.equal(out[1, 2:], torch.zeros(2, 5, 5, 5))  # one modality: variance 0
    torch.testing.assert_close(out[1, :2], maps[1, 2])


def test_product_of_experts_with_the_prior_matches_the_direct_formula():
    torch.manual_seed(0)
    mu = torch.randn(3, 4, 2, 3, 3, 3, dtype=torch.float64)
    logvar = torch.randn(3, 4, 2, 3, 3, 3, dtype=torch.float64)
    available = torch.tensor([[True, False, True, True], [False, False, True, False], [True, True, True, True]])
    mu[~available] = float("nan")  # a missing expert's numbers must not reach the result
    logvar[~available] = float("nan")
    post_mu, post_logvar = product_of_experts(mu, logvar, available)
    for b in range(3):
        kept = available[b].nonzero().flatten().tolist()
        expected_mu, expected_var = direct_poe(mu[b], logvar[b].exp(), kept)
        # the code's 1e-7 in 1/(var + 1e-7) and log(var + 1e-7) is the only difference
        torch.testing.assert_close(post_mu[b], expected_mu, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(post_logvar[b].exp() - 1e-7, expected_var, rtol=1e-5, atol=1e-6)
    # one expert: mu_1 / (1 + var_1); the prior always shrinks the mean and the variance
    torch.testing.assert_close(post_mu[1], mu[1, 2] / (1 + logvar[1, 2].exp()), rtol=1e-5, atol=1e-6)
    assert (post_logvar.exp() < 1).all()
    # a single subset mask (M booleans) applies to every sample
    sub_mu, _ = product_of_experts(mu[2:], logvar[2:], torch.tensor([True, False, False, True]))
    torch.testing.assert_close(sub_mu[0], direct_poe(mu[2], logvar[2].exp(), [0, 3])[0], rtol=1e-5, atol=1e-6)
