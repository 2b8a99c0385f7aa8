"""Multi-modal classification: one label per sample, cross-entropy, softmax probabilities, epochs over
a seeded permutation, batched inference scored per sample.

A sample's modalities are described by ``InputSpec(kind, shape)``: an ``image`` (C x H x W), a
``spectrogram`` (MFCC or spectrogram map, C x F x T) or a ``tabular`` row (D,), shapes without the
batch dimension. Methods build their encoders from these specs (missbench/nets/classification.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from missbench.core.availability import Inputs, split_masks
from missbench.core.dataset import ClassificationDataset, Samples
from missbench.core.execution import Execution, PhaseTimer
from missbench.core.method import Method
from missbench.core.inference import subset_predictor
from missbench.core.subsets import Subset, subset_from_mask
from missbench.core.tasks.base import Batch, EvalSettings, Task

KINDS = ("image", "spectrogram", "tabular")
#: Samples per forward pass (evaluation, and the data a training stage sees).
EVAL_BATCH = 256


class InputSpec(NamedTuple):
    """What one modality looks like: its ``kind`` (in KINDS) and its ``shape`` without the batch dim."""

    kind: str
    shape: tuple[int, ...]


class SampleBatches:
    """`Batches` of a classification split: epochs over a seeded permutation of the samples.

    Stateless given the iteration (epoch e's order comes from (seed, e)), so a resume needs no state.
    ``masks`` (N x M) fix each sample's availability (a missing-rate protocol).
    """

    def __init__(self, samples: Samples, batch: int, seed: int, masks: np.ndarray | None) -> None:
        self.samples, self.batch, self.seed, self.masks = samples, batch, seed, masks
        self._orders: dict[int, np.ndarray] = {}

    def indices(self, step: int) -> np.ndarray:
        n = len(self.samples)
        out = []
        for pos in range(step * self.batch, (step + 1) * self.batch):
            epoch = pos // n
            if epoch not in self._orders:
                self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(n)}
            out.append(self._orders[epoch][pos % n])
        return np.asarray(out)

    def take(self, idx: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor]:
        return [torch.from_numpy(a[idx]).float() for a in self.samples.x], torch.from_numpy(self.samples.y[idx].astype(np.int64))

    def sample(self, step: int) -> Batch:
        idx = self.indices(step)
        return *self.take(idx), torch.from_numpy(self.masks[idx]) if self.masks is not None else None

    def stage(self, every: torch.Tensor) -> Iterator[tuple[Inputs, torch.Tensor, torch.Tensor]]:
        """The whole split once, in sample order."""
        for start in range(0, len(self.samples), EVAL_BATCH):
            idx = np.arange(start, min(start + EVAL_BATCH, len(self.samples)))
            yield *self.take(idx), torch.from_numpy(self.masks[idx]) if self.masks is not None else every.expand(len(idx), -1)


class Classification(Task):
    """``n_classes``-way classification of samples with the modalities in ``inputs`` (data set order)."""

    name = "classification"
    primary_metric = "correct"
    selection_criterion = "mean accuracy over the evaluation conditions"
    selects_on_validation = True

    def __init__(self, n_classes: int, inputs: dict[str, InputSpec | tuple[str, tuple[int, ...]]]) -> None:
        if not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"classification: n_classes must be an integer >= 2, got {n_classes!r}")
        if not inputs:
            raise ValueError("classification: inputs must name at least one modality")
        self.n_classes = n_classes
        self.inputs: dict[str, InputSpec] = {}
        for name, spec in inputs.items():
            kind, shape = spec
            if kind not in KINDS:
                raise ValueError(f"classification: input {name!r} has kind {kind!r}; expected one of {list(KINDS)}")
            shape = tuple(int(s) for s in shape)
            if (kind == "tabular") != (len(shape) == 1) or any(s < 1 for s in shape):
                raise ValueError(f"classification: input {name!r} of kind {kind!r} has shape {shape}; "
                                 f"expected {'(D,)' if kind == 'tabular' else '(C, H, W)'}")
            self.inputs[name] = InputSpec(kind, shape)

    def __repr__(self) -> str:
        return f"Classification(n_classes={self.n_classes}, inputs={self.inputs})"

    def params(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this task with `get_task`."""
        return {"n_classes": self.n_classes, "inputs": {k: (v.kind, v.shape) for k, v in self.inputs.items()}}

    @staticmethod
    def _check(output: str) -> None:
        if output != "labels":
            raise ValueError(f"classification has only the 'labels' output convention, got {output!r}")

    def out_channels(self, output: str) -> int:
        self._check(output)
        return self.n_classes

    def loss(self, logits: torch.Tensor, target: torch.Tensor, output: str) -> dict[str, torch.Tensor]:
        self._check(output)
        return {"ce": F.cross_entropy(logits, target)}

    def probabilities(self, logits: torch.Tensor, output: str) -> torch.Tensor:
        self._check(output)
        return torch.softmax(logits, 1)

    def to_labels(self, probs: np.ndarray | torch.Tensor, output: str) -> np.ndarray:
        """B x n_classes probabilities -> B predicted class indices (arg-max)."""
        self._check(output)
        return np.asarray(probs.argmax(1) if isinstance(probs, np.ndarray) else probs.argmax(1).cpu().numpy())

    def split(self, dataset: ClassificationDataset, name: str) -> Samples:
        return dataset.samples(name)

    def split_masks(self, splits: dict[str, Samples], missing: dict[str, Any], rate: float, modalities: tuple[str, ...],
                    seed: int) -> dict[str, np.ndarray | None]:
        return split_masks(missing, rate, {s: v.y for s, v in splits.items()}, modalities, self.n_classes, seed)

    def batches(self, data: Samples, batch: int, patch: tuple[int, int, int] | None, rng: np.random.Generator, seed: int,
                masks: np.ndarray | None = None, sampler: str = "shaspec") -> SampleBatches:
        return SampleBatches(data, batch, seed, masks)  # whole samples: no patch pipeline

    @torch.inference_mode()
    def evaluate(self, method: Method, data: Samples, subsets: list[Subset], settings: EvalSettings, exe: Execution,
                 masks: np.ndarray | None = None, timer: PhaseTimer | None = None) -> list[dict[str, Any]]:
        """Every sample on every subset, or, with ``masks`` (N x M), each sample once with its own
        availability. Batched; per-modality features are shared across the subsets of a batch when the
        method encodes modalities separately. Rows are in (condition, sample) order.

        Each row: case_id, eval_subset (the sample's actual available subset), eval_code, n_available,
        condition (the subset, or "masks"), target, pred, prob (class probabilities), metric "correct", value 0/1.
        """
        method.eval()
        mods = method.modalities
        if masks is None:
            plan = [(np.arange(len(data)), subsets)]
        else:
            codes = masks.astype(np.int64) @ (1 << np.arange(masks.shape[1]))
            plan = [(np.flatnonzero(codes == c), [subset_from_mask(masks[codes == c][0].tolist(), mods)]) for c in np.unique(codes)]
        rows: list[tuple[int, int, dict]] = []
        for idx_all, subs in plan:
            predict = subset_predictor(method, subs, timer=timer)
            for start in range(0, len(idx_all), EVAL_BATCH):
                idx = idx_all[start:start + EVAL_BATCH]
                with exe.autocast():
                    probs = predict(exe.prepare([torch.from_numpy(a[idx]).float() for a in data.x]))
                for k, (subset, p) in enumerate(zip(subs, probs)):
                    p = p.float().cpu().numpy()
                    pred = self.to_labels(p, method.output)
                    for j, i in enumerate(idx.tolist()):
                        target = int(data.y[i])
                        rows.append((i, k, {
                            "case_id": data.ids[i], "eval_subset": subset.label, "eval_code": subset.code, "n_available": len(subset),
                            "condition": subset.label if masks is None else "masks", "target": target, "pred": int(pred[j]),
                            "prob": p[j].tolist(), "metric": "correct", "value": float(pred[j] == target),
                        }))
        return [r for *_, r in sorted(rows, key=lambda t: (t[1], t[0]))]

    def inference_pass(self, method: Method, data: Samples, settings: EvalSettings, exe: Execution, batch: int) -> Callable[[], None]:
        """One batch of the split's first ``batch`` samples with every modality present."""
        full = Subset(tuple(method.modalities), tuple(method.modalities))
        predict = subset_predictor(method, [full])
        idx = np.arange(min(batch, len(data)))
        x = exe.prepare([torch.from_numpy(a[idx]).float() for a in data.x])

        def run() -> None:
            with torch.inference_mode():
                predict(x)

        return run
