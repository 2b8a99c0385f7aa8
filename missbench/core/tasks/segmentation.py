"""3-D brain-tumour segmentation (BraTS labels, missbench/core/regions.py): losses, label conversion,
patch sampling, sliding-window inference and per-case scoring."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from missbench.core.availability import Inputs
from missbench.core.dataset import Case, Dataset
from missbench.core.execution import Execution, PhaseTimer
from missbench.core.method import Method
from missbench.core.inference import Predictor, subset_predictor
from missbench.core.metrics import score_case
from missbench.core.regions import LABELS, REGION_LABELS, REGIONS
from missbench.core.subsets import Subset
from missbench.core.tasks.base import Batch, EvalSettings, Task
from missbench.core.tasks.sampling import SAMPLERS, RegionIndex, sample_rfnet, sample_shaspec, sample_uniform

#: Training patches a method's `fit_stage` sees (one seeded set, the same every time).
STAGE_PATCHES = 32


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


@dataclass
class Cases:
    """A segmentation split: case ids and their loader; iterating loads one case at a time."""

    ids: list[str]
    load: Callable[[str], Case]

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[Case]:
        return (self.load(c) for c in self.ids)


class PatchSampler:
    """Random training patches by one of the named pipelines (missbench/core/tasks/sampling.py): ``sampler``
    "shaspec" (ShaSpec's class-centred crop, scaling and mirroring), "rfnet" (RFNet's and mmFormer's uniform
    crop, rotation, intensity change and flips) or "uniform" (a crop, nothing else)."""

    def __init__(self, cases: list[Case], patch: tuple[int, int, int], rng: np.random.Generator, sampler: str = "shaspec") -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown patch sampler {sampler!r}; expected one of {list(SAMPLERS)}")
        self.cases, self.patch, self.rng, self.sampler = cases, tuple(patch), rng, sampler
        # ShaSpec centres crops on region voxels: their index, int32 (12 bytes per tumour voxel, 4 more per TC and ET voxel)
        self.regions = [RegionIndex(c.target) for c in cases] if sampler == "shaspec" else []

    def draw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """One patch (image M x patch, label map) of case ``i``."""
        case = self.cases[i]
        if self.sampler == "shaspec":
            return sample_shaspec(case, self.regions[i], self.patch, self.rng)
        if self.sampler == "rfnet":
            return sample_rfnet(case, self.patch, self.rng)
        return sample_uniform(case, self.patch, self.rng)

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sample_cases(batch)[:2]

    def sample_cases(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """A batch of patches with the index of each patch's case (its mask's row)."""
        images, targets, drawn = [], [], []
        for _ in range(batch):
            i = int(self.rng.integers(len(self.cases)))
            drawn.append(i)
            image, target = self.draw(i)
            images.append(image)
            targets.append(target)
        return (torch.from_numpy(np.stack(images)).float(), torch.from_numpy(np.stack(targets).astype(np.int64)),
                np.asarray(drawn))


class PatchBatches:
    """`Batches` of a segmentation split: random patches per iteration by the training's ``sampler``; for a stage,
    `STAGE_PATCHES` patches from a fixed seed by the same pipeline. ``masks`` (N x M, an incomplete-training
    protocol) give each patch its case's availability, which bounds the trainer's dropping draw
    (missbench/engine/batches.py)."""

    def __init__(self, cases: list[Case], batch: int, patch: tuple[int, int, int], rng: np.random.Generator, seed: int,
                 masks: np.ndarray | None = None, sampler: str = "shaspec") -> None:
        if masks is not None and masks.shape != (len(cases), masks.shape[1]):
            raise ValueError(f"{len(masks)} availability masks for {len(cases)} training cases")
        self.cases, self.batch, self.patch, self.seed, self.masks = cases, batch, patch, seed, masks
        self.sampler_name = sampler
        self.sampler = PatchSampler(cases, patch, rng, sampler)

    def _masks(self, drawn: np.ndarray) -> torch.Tensor | None:
        return torch.from_numpy(self.masks[drawn]) if self.masks is not None else None

    def sample(self, step: int) -> Batch:
        x, y, drawn = self.sampler.sample_cases(self.batch)
        return x, y, self._masks(drawn)

    def stage(self, every: torch.Tensor) -> Iterator[tuple[Inputs, torch.Tensor, torch.Tensor]]:
        """The stage's patches; each with its case's mask where there are masks (within ``every``)."""
        fixed_set = PatchSampler(self.cases, self.patch, np.random.default_rng([self.seed, 1]), self.sampler_name)
        for start in range(0, STAGE_PATCHES, self.batch):
            n = min(self.batch, STAGE_PATCHES - start)
            x, y, drawn = fixed_set.sample_cases(n)
            masks = self._masks(drawn)
            yield x, y, every.expand(n, -1) if masks is None else masks & every


class Segmentation(Task):
    """Multi-label region output (sigmoid, Dice + BCE as ShaSpec) or softmax over labels (CE + Dice)."""

    name = "segmentation"
    primary_metric = "dice"
    selection_criterion = "mean Dice over the evaluation subsets, regions and cases"
    volumetric = True

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

    def split(self, dataset: Dataset, name: str) -> Cases:
        return Cases(dataset.case_ids(name), dataset.load)

    def batches(self, data: Cases, batch: int, patch: tuple[int, int, int] | None, rng: np.random.Generator, seed: int,
                masks: np.ndarray | None = None, sampler: str = "shaspec") -> PatchBatches:
        return PatchBatches(list(data), batch, patch, rng, seed, masks, sampler)

    def evaluate(self, method: Method, data: Cases, subsets: list[Subset], settings: EvalSettings, exe: Execution,
                 masks: np.ndarray | None = None, timer: PhaseTimer | None = None) -> list[dict[str, Any]]:
        """One row per (case, subset, region, metric): Dice and HD95 of ET, ETpp, TC and WT."""
        timer = timer or PhaseTimer()
        method.eval()
        predict = subset_predictor(method, subsets, timer=timer)
        rows = []
        for case in data:
            for subset, pred in zip(subsets, predict_case(predict, method, case, settings, exe)):
                where = {"case_id": case.case_id, "eval_subset": subset.label, "eval_code": subset.code, "n_available": len(subset)}
                with timer.phase("metric"):
                    policy = settings.policy
                    rows += [where | score for score in score_case(pred, case.target, case.spacing, policy.empty,
                                                                      policy.et_threshold, policy.hd95)]
        return rows

    def inference_pass(self, method: Method, data: Cases, settings: EvalSettings, exe: Execution, batch: int) -> Callable[[], None]:
        """Sliding-window prediction of the split's first case with every modality present."""
        full = Subset(tuple(method.modalities), tuple(method.modalities))
        predict, case = subset_predictor(method, [full]), data.load(data.ids[0])
        return lambda: predict_case(predict, method, case, settings, exe)

    def feature_views(self, method: Method, data: Cases, settings: EvalSettings, exe: Execution) -> dict[str, np.ndarray] | None:
        """The views of each case's centre patch (the training patch size) with every modality present."""
        views: dict[str, list[np.ndarray]] = {}
        method.eval()
        with torch.inference_mode():
            for case in data:
                image = torch.from_numpy(case.image).float()
                box = tuple(slice(max(0, (s - p) // 2), max(0, (s - p) // 2) + p) for s, p in zip(image.shape[1:], settings.patch))
                got = method.feature_views(exe.prepare(image[(slice(None), *box)][None]))
                if got is None:
                    return None
                for key, value in got.items():
                    views.setdefault(key, []).append(value[0].float().cpu().numpy())
        return {k: np.stack(v) for k, v in views.items()}

def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Window origins along one axis: stride ceil(patch*(1-overlap)), the last window flush with the end
    (ShaSpec's eval.py ``predict_sliding``; RFNet's 50% on even patches is the same stride)."""
    if patch >= size:
        return [0]
    stride = max(1, math.ceil(patch * (1 - overlap)))
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


@torch.inference_mode()
def predict_case(predict: Predictor, method: Method, case: Case, settings: EvalSettings, exe: Execution) -> list[np.ndarray]:
    """Label maps of one case, one per subset of ``predict`` (a `subset_predictor`)."""
    volume = torch.from_numpy(case.image).float()[None].to(exe.device)
    with exe.autocast():
        probs = sliding_window(volume, settings.patch, lambda w: predict(exe.prepare(w)), settings.overlap, exe.window_batch,
                               settings.window)
    return [method.task.to_labels(p[0].cpu().numpy(), method.output) for p in probs]
