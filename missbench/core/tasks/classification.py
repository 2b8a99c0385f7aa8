"""Multi-modal classification: one label per sample, cross-entropy, softmax probabilities.

A sample's modalities are described by ``InputSpec(kind, shape)``: an ``image`` (C x H x W), a
``spectrogram`` (MFCC or spectrogram map, C x F x T) or a ``tabular`` row (D,), shapes without the
batch dimension. Methods build their encoders from these specs (missbench/nets/classification.py).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from missbench.core.tasks import Task

KINDS = ("image", "spectrogram", "tabular")


class InputSpec(NamedTuple):
    """What one modality looks like: its ``kind`` (in KINDS) and its ``shape`` without the batch dim."""

    kind: str
    shape: tuple[int, ...]


class Classification(Task):
    """``n_classes``-way classification of samples with the modalities in ``inputs`` (data set order)."""

    name = "classification"

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
