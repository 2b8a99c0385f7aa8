"""Availability: which modalities a sample has, and the harness's zeroing of the missing ones.

Three pieces, each used by the engine before any method sees a batch:

- modality-dropping schemes (`DROPOUT_SCHEMES`, `draw_available`): a training batch's random
  per-sample availability;
- a protocol's fixed per-sample availability (`MISSING_SCHEMES`, `split_masks`): missing-rate grids;
- input zeroing (`zero_inputs`): a batch is one tensor (B x M x ..., segmentation) or a list of
  per-modality tensors (classification, where modalities differ in shape); both are treated alike.

Missing-rate masks come in two schemes, each a grid over a rate (``missing: {scheme, rates, ...}`` in
a protocol file):

- ``modality_rate`` (SMIL, ShaSpec Table 3, protocols/audio_rate.yaml): every modality but one is
  always present; ``modality`` is present for round(rate x N) training samples, N the data set's
  total size (train + val + test: SMIL's "15*10 = 150 sound data available, total 1500"), spread
  over the classes as evenly as possible (the classes that get one more are drawn) and drawn
  within each class. Only the training split gets masks; evaluation uses the protocol's subsets.
- ``slots`` (UL4M4, protocols/missing_slots.yaml): each (sample, modality) slot is missing
  independently with probability ``rate``, in every split; a sample that lost every modality gets
  one back, drawn uniformly. So the realised slot-missing rate is rate - rate^M / M (M modalities:
  with two, at most half the slots can be missing when no sample may lose both); runs record it
  in meta.json.

Masks depend only on (seed, data set, protocol, rate) through ``RunSpec.mask_seed``, never on the
method, so every method of a comparison sees the same masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

Inputs = torch.Tensor | list[torch.Tensor]

# --- modality-dropping schemes ------------------------------------------------------------------

DROPOUT_SCHEMES = ("count_then_subset", "uniform_subset", "full")


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
    raise ValueError(f"unknown modality-dropout scheme {scheme!r}; expected one of {list(DROPOUT_SCHEMES)}")


# --- fixed per-sample availability (missing-rate protocols) -------------------------------------

MISSING_SCHEMES = ("modality_rate", "slots")
#: How a test sample is evaluated: on every protocol subset, or with its own drawn mask.
EVALS = ("subsets", "masks")


def modality_rate_masks(y: np.ndarray, n_modalities: int, modality: int, rate: float, n_total: int,
                        n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """N x M availability: all present, except ``modality`` present for round(rate x n_total) samples, per class."""
    count = int(round(rate * n_total))
    per_class = np.full(n_classes, count // n_classes)
    per_class[rng.permutation(n_classes)[: count % n_classes]] += 1
    masks = np.ones((len(y), n_modalities), bool)
    masks[:, modality] = False
    for c in range(n_classes):
        members = np.flatnonzero(y == c)
        if per_class[c] > len(members):
            raise ValueError(f"missing rate {rate}: class {c} needs {per_class[c]} training samples with the modality "
                             f"but has {len(members)}")
        masks[rng.choice(members, per_class[c], replace=False), modality] = True
    return masks


def slot_masks(n: int, n_modalities: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """N x M availability, each slot missing with probability ``rate``; a sample never loses every modality."""
    masks = rng.random((n, n_modalities)) >= rate
    empty = np.flatnonzero(~masks.any(1))
    masks[empty, rng.integers(n_modalities, size=len(empty))] = True
    return masks


def split_masks(missing: dict[str, Any], rate: float, labels: dict[str, np.ndarray], modalities: tuple[str, ...],
                n_classes: int, seed: int) -> dict[str, np.ndarray | None]:
    """The masks of each split ('train', 'val', 'test' -> N x M, or None: evaluate on the protocol's subsets)."""
    rngs = {split: np.random.default_rng([seed, i]) for i, split in enumerate(("train", "val", "test"))}
    if missing["scheme"] == "modality_rate":
        n_total = sum(len(v) for v in labels.values())
        train = modality_rate_masks(labels["train"], len(modalities), modalities.index(missing["modality"]), rate,
                                    n_total, n_classes, rngs["train"])
        return {"train": train, "val": None, "test": None}
    if missing["scheme"] == "slots":
        out: dict[str, np.ndarray | None] = {s: slot_masks(len(y), len(modalities), rate, rngs[s]) for s, y in labels.items()}
        if missing.get("eval", "masks") == "subsets":
            out["val"] = out["test"] = None
        return out
    raise ValueError(f"unknown missing-modality scheme {missing['scheme']!r}; expected one of {list(MISSING_SCHEMES)}")


def missing_share(masks: np.ndarray | None) -> float:
    """Share of (sample, modality) slots that are missing (0 for None: nothing fixed)."""
    return float((~masks).mean()) if masks is not None and masks.size else 0.0


# --- zeroing and batch helpers ---------------------------------------------------------------------

def zero_inputs(x: Inputs, available: torch.Tensor) -> Inputs:
    """Zero the inputs of missing modalities (``available``: B x M), the harness's job before any method sees ``x``."""
    if isinstance(x, torch.Tensor):
        return x * available.to(x.device, x.dtype).view(*available.shape, *[1] * (x.ndim - 2))
    return [xm * available[:, m].to(xm.device, xm.dtype).view(-1, *[1] * (xm.ndim - 1)) for m, xm in enumerate(x)]


def zeros_like(x: Inputs) -> Inputs:
    """An all-zero batch of ``x``'s shape: every modality missing."""
    return torch.zeros_like(x) if isinstance(x, torch.Tensor) else [torch.zeros_like(t) for t in x]


def batch_size(x: Inputs) -> int:
    """The number of samples in a batch."""
    return x.shape[0] if isinstance(x, torch.Tensor) else x[0].shape[0]


def device(x: Inputs) -> torch.device:
    """The device a batch lives on."""
    return x.device if isinstance(x, torch.Tensor) else x[0].device


def shape_key(x: Inputs) -> tuple:
    """Hashable shape of a batch (a cache key for features of an all-zero input)."""
    return tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(tuple(t.shape) for t in x)
