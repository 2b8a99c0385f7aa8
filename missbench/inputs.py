"""A batch of multi-modal inputs is one tensor (B x M x ..., segmentation) or a list of per-modality
tensors (classification, where modalities differ in shape). These helpers treat both alike."""

from __future__ import annotations

import torch

from missbench.dropout import zero_missing

Inputs = torch.Tensor | list[torch.Tensor]


def zero_inputs(x: Inputs, available: torch.Tensor) -> Inputs:
    """Zero the inputs of missing modalities (``available``: B x M), the harness's job before any method sees ``x``."""
    if isinstance(x, torch.Tensor):
        return zero_missing(x, available)
    return [xm * available[:, m].to(xm.device, xm.dtype).view(-1, *[1] * (xm.ndim - 1)) for m, xm in enumerate(x)]


def zeros_like(x: Inputs) -> Inputs:
    return torch.zeros_like(x) if isinstance(x, torch.Tensor) else [torch.zeros_like(t) for t in x]


def batch_size(x: Inputs) -> int:
    return x.shape[0] if isinstance(x, torch.Tensor) else x[0].shape[0]


def device(x: Inputs) -> torch.device:
    return x.device if isinstance(x, torch.Tensor) else x[0].device


def shape_key(x: Inputs) -> tuple:
    """Hashable shape of a batch (a cache key for features of an all-zero input)."""
    return tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(tuple(t.shape) for t in x)
