"""Modality-dropping schemes: how a training batch's per-sample availability is drawn."""

from __future__ import annotations

import torch

SCHEMES = ("count_then_subset", "uniform_subset", "full")


def draw_available(scheme: str, batch: int, n_modalities: int, generator: torch.Generator) -> torch.Tensor:
    """B x M availability, never empty.

    ``count_then_subset``: kept count uniform in 1..M, then a uniform subset of that size (ShaSpec's
    ``--mode=random``, U-HVED); ``uniform_subset``: uniform over the 2^M - 1 subsets (RFNet,
    mmFormer); ``full``: every modality.
    """
    if scheme == "full":
        return torch.ones(batch, n_modalities, dtype=torch.bool)
    if scheme == "count_then_subset":
        out = torch.zeros(batch, n_modalities, dtype=torch.bool)
        counts = torch.randint(1, n_modalities + 1, (batch,), generator=generator)
        for b, k in enumerate(counts.tolist()):
            out[b, torch.randperm(n_modalities, generator=generator)[:k]] = True
        return out
    if scheme == "uniform_subset":
        codes = torch.randint(1, 2**n_modalities, (batch,), generator=generator)
        return (codes[:, None] >> torch.arange(n_modalities)) & 1 == 1
    raise ValueError(f"unknown modality-dropout scheme {scheme!r}; expected one of {list(SCHEMES)}")


def zero_missing(x: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """Zero the inputs of missing modalities (B x M x ...), the harness's job before any method sees ``x``."""
    return x * available.to(x.device, x.dtype).view(*available.shape, *[1] * (x.ndim - 2))
