"""3-D brain-tumour segmentation: BraTS labels {0,1,2,4}, nested regions ET ⊂ TC ⊂ WT, losses, inference.

Regions are kept in table order ET, TC, WT everywhere (ShaSpec's code orders its sigmoid channels
ET, WT, TC; a permutation of channels changes nothing).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from missbench.core.tasks import Task

LABELS = (0, 1, 2, 4)
REGIONS = ("ET", "TC", "WT")
REGION_LABELS = {"ET": (4,), "TC": (1, 4), "WT": (1, 2, 4)}


def regions_from_labels(labels: torch.Tensor) -> torch.Tensor:
    """B x ... label map -> B x 3 x ... float masks in REGIONS order."""
    return torch.stack([torch.isin(labels, torch.tensor(REGION_LABELS[r], device=labels.device)) for r in REGIONS], 1).float()


def label_index(labels: torch.Tensor) -> torch.Tensor:
    """B x ... label map in LABELS -> class indices 0..3 (label 4 is class 3, as RFNet's and mmFormer's loaders)."""
    index = torch.zeros_like(labels, dtype=torch.long)
    for i, lab in enumerate(LABELS):
        index[labels == lab] = i
    return index


def labels_onehot(labels: torch.Tensor) -> torch.Tensor:
    """B x ... label map -> B x 4 x ... float one-hot in LABELS order."""
    return F.one_hot(label_index(labels), len(LABELS)).movedim(-1, 1).float()


def labels_from_regions(probs: np.ndarray | torch.Tensor, threshold: float = 0.5) -> np.ndarray:
    """3 x ... region probabilities -> label map, written WT as 2, then TC as 1, then ET as 4 (ShaSpec's eval.py)."""
    p = np.asarray(probs)
    out = np.zeros(p.shape[1:], dtype=np.uint8)
    out[p[REGIONS.index("WT")] > threshold] = 2
    out[p[REGIONS.index("TC")] > threshold] = 1
    out[p[REGIONS.index("ET")] > threshold] = 4
    return out


def labels_from_softmax(probs: np.ndarray | torch.Tensor) -> np.ndarray:
    """4 x ... class probabilities over LABELS -> label map."""
    return np.asarray(LABELS, dtype=np.uint8)[np.asarray(probs).argmax(0)]


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean over batch and channels of 1 - 2Σpt/(Σp+Σt+smooth) (ShaSpec's loss_Dual.py, smooth 1)."""
    dims = tuple(range(2, probs.ndim))
    inter = (probs * target).sum(dims)
    return (1 - 2 * inter / (probs.sum(dims) + target.sum(dims) + smooth)).mean()


class Segmentation(Task):
    """Multi-label region output (sigmoid, Dice + BCE as ShaSpec) or softmax over labels (CE + Dice)."""

    name = "segmentation"

    def out_channels(self, output: str) -> int:
        return {"regions": len(REGIONS), "labels": len(LABELS)}[output]

    def loss(self, logits: torch.Tensor, target: torch.Tensor, output: str) -> dict[str, torch.Tensor]:
        if output == "regions":
            t = regions_from_labels(target)
            # BCE averaged per channel, summed over the channels (ShaSpec's train_SS.py).
            bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none").mean(tuple(i for i in range(logits.ndim) if i != 1)).sum()
            return {"dice": soft_dice_loss(torch.sigmoid(logits), t), "bce": bce}
        if output == "labels":
            return {"ce": F.cross_entropy(logits, label_index(target)), "dice": soft_dice_loss(torch.softmax(logits, 1), labels_onehot(target))}
        raise ValueError(f"unknown output convention {output!r}; expected 'regions' or 'labels'")

    def probabilities(self, logits: torch.Tensor, output: str) -> torch.Tensor:
        return torch.sigmoid(logits) if output == "regions" else torch.softmax(logits, 1)

    def to_labels(self, probs: np.ndarray, output: str) -> np.ndarray:
        """Probabilities of one case (C x D x H x W) -> label map, so every method is scored alike."""
        return labels_from_regions(probs) if output == "regions" else labels_from_softmax(probs)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Window origins along one axis: stride patch*(1-overlap), the last window flush with the end."""
    if patch >= size:
        return [0]
    stride = max(1, int(round(patch * (1 - overlap))))
    starts = list(range(0, size - patch, stride))
    return starts + [size - patch]


def gaussian_weights(patch: tuple[int, ...], sigma_scale: float = 1 / 8) -> torch.Tensor:
    """nnU-Net's window importance map: a Gaussian centred at ``p // 2`` with sigma ``p * sigma_scale``
    per axis, scaled to a maximum of 1 (nnU-Net ``compute_gaussian``, without its filter truncation)."""
    axes = [torch.exp(-0.5 * ((torch.arange(p, dtype=torch.float64) - p // 2) / (p * sigma_scale)) ** 2) for p in patch]
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    w = w / w.max()
    return w.clamp_min(w[w > 0].min()).float()


def sliding_window(
    volume: torch.Tensor,
    patch: tuple[int, int, int],
    predict: Callable[[torch.Tensor], list[torch.Tensor]],
    overlap: float = 0.5,
    batch_windows: int = 1,
    weighting: str = "uniform",
) -> list[torch.Tensor]:
    """Average window predictions over a whole volume (1 x M x D x H x W).

    ``weighting`` "uniform" (ShaSpec's eval.py, RFNet's predict.py) or "gaussian" (nnU-Net: each
    window weighted by `gaussian_weights`, sigma 1/8 of the window). ``predict`` maps a batch of
    windows to a list of probability maps (one per output head, e.g. per subset), so one encoding
    can serve many subsets. Volumes smaller than the patch are zero-padded, and the padding is
    cropped off again.
    """
    if weighting not in ("uniform", "gaussian"):
        raise ValueError(f"unknown window weighting {weighting!r}; expected 'uniform' or 'gaussian'")
    weight = gaussian_weights(patch).to(volume.device) if weighting == "gaussian" else None
    shape = volume.shape[2:]
    pad = [max(0, p - s) for p, s in zip(patch, shape)]
    if any(pad):
        volume = F.pad(volume, [x for p in reversed(pad) for x in (0, p)])
    full = volume.shape[2:]
    starts = [window_starts(s, min(p, s), overlap) for s, p in zip(full, patch)]
    corners = list(itertools.product(*starts))
    sums: list[torch.Tensor] | None = None
    count = torch.zeros((1, 1, *full), dtype=torch.float32, device=volume.device)
    for i in range(0, len(corners), batch_windows):
        group = corners[i : i + batch_windows]
        windows = torch.cat([volume[(..., *[slice(c, c + p) for c, p in zip(cor, patch)])] for cor in group])
        outs = predict(windows)
        if sums is None:
            sums = [torch.zeros((1, o.shape[1], *full), dtype=torch.float32, device=volume.device) for o in outs]
        for j, cor in enumerate(group):
            sl = (..., *[slice(c, c + p) for c, p in zip(cor, patch)])
            for acc, o in zip(sums, outs):
                acc[sl] += o[j : j + 1].float() if weight is None else o[j : j + 1].float() * weight
            count[sl] += 1 if weight is None else weight
    assert sums is not None
    crop = (..., *[slice(0, s) for s in shape])
    return [(acc / count)[crop] for acc in sums]
