"""Fusion over the available modalities, the rules several methods share: the mean (and the fill of a
missing modality with it), HeMIS's first two moments, and the product of Gaussian experts (U-HVED).

Per-modality features are stacked as B x M x C (x ...); ``available`` is B x M booleans. Missing
entries are dropped with ``torch.where`` (not multiplied by 0), so nothing a missing modality's
feature holds, not even a NaN, reaches a result.
"""

from __future__ import annotations

import torch

#: Added to each expert's variance, and to the posterior's, as U-HVED's ``Product_Gaussian_main``.
POE_EPS = 1e-7


def availability_mask(available: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``available`` (B x M, or M for the whole batch) shaped to broadcast against B x M x C x ... ``like``."""
    mask = available.to(like.device)
    return (mask if mask.ndim == 2 else mask[None]).view(-1, like.shape[1], *[1] * (like.ndim - 2))


def mean_over_available(feats: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """B x C x ...: the mean of the available modalities' features (0 for a sample with none)."""
    mask = availability_mask(available, feats)
    return torch.where(mask, feats, 0).sum(1) / mask.sum(1).clamp_min(1).to(feats.dtype)


def fill_missing_with_mean(feats: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """``feats`` with each missing modality's features replaced by the mean of the available ones (Eq. 4 of ShaSpec)."""
    return torch.where(availability_mask(available, feats), feats, mean_over_available(feats, available).unsqueeze(1))


def moments_over_available(feats: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """HeMIS's abstraction: [mean, population variance] over the available modalities, B x 2C x ..."""
    mask = availability_mask(available, feats)
    mean = mean_over_available(feats, available)
    var = torch.where(mask, (feats - mean.unsqueeze(1)).pow(2), 0).sum(1) / mask.sum(1).clamp_min(1).to(feats.dtype)
    return torch.cat([mean, var], 1)


def product_of_experts(mu: torch.Tensor, logvar: torch.Tensor, available: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Product of the available Gaussian experts (B x M x C x ...) and N(0, I): posterior mean and log-variance.

    T = 1 + Σ_avail 1/(σ²_m + 1e-7), μ = Σ_avail μ_m/(σ²_m + 1e-7) / T, logvar = log(1/T + 1e-7), as
    U-HVED's ``Product_Gaussian_main``; ``available`` may be B x M or M (one pattern for the batch).
    """
    mask = availability_mask(available, mu)
    precision = torch.where(mask, 1 / (logvar.exp() + POE_EPS), 0)
    weighted = torch.where(mask, mu * precision, 0)
    total = precision.sum(1) + 1  # the prior expert: precision 1, mean 0
    return weighted.sum(1) / total, torch.log(1 / total + POE_EPS)
