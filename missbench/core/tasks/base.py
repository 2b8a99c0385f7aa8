"""The `Task` contract: everything that differs between segmentation and classification, so the engine
asks the task (loss, batching, inference, scoring, label conversion) instead of testing types."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from missbench.core.availability import Inputs
from missbench.core.dataset import Dataset
from missbench.core.execution import Execution, PhaseTimer
from missbench.core.metrics import MetricPolicy
from missbench.core.subsets import Subset

# A task's hooks take the method as an nn.Module: missbench.core.method.Method imports this module.


@dataclass(frozen=True)
class EvalSettings:
    """How a split is scored: sliding windows (segmentation: ``patch``, ``overlap``, ``window`` weighting)
    and the metric policy."""

    patch: tuple[int, int, int] | None = None
    overlap: float = 0.5
    window: str = "uniform"
    policy: MetricPolicy = field(default_factory=MetricPolicy)

    def columns(self) -> dict[str, Any]:
        """The row columns that record how rows were scored: the metric policy and, for volumes, the windows."""
        windows = {"window_overlap": self.overlap, "window_weighting": self.window} if self.patch is not None else {}
        return self.policy.columns() | windows


#: (x, target, masks or None) of one training iteration: the samples' fixed masks (N x M rows) of a missing-rate
#: protocol, which the trainer uses as they are (modality_rate, slots) or draws within (per_modality, mnar:
#: missbench/engine/batches.py); None: the trainer draws the availability.
Batch = tuple[Inputs, torch.Tensor, torch.Tensor | None]


class Batches(Protocol):
    """A training split's batches, as `Task.batches` makes them."""

    def sample(self, step: int) -> Batch:
        """The batch of iteration ``step``."""

    def stage(self, every: torch.Tensor) -> Iterator[tuple[Inputs, torch.Tensor, torch.Tensor]]:
        """The data a method's `fit_stage` sees, as (x, target, available); ``every`` (1 x M) is the
        availability of samples without a fixed mask."""


class Task:
    """Base class of the tasks; one instance per run, built by `missbench.core.tasks.get_task`."""

    name: ClassVar[str]
    #: The per-row metric whose mean is the model-selection score (higher is better), and that score in words.
    primary_metric: ClassVar[str]
    selection_criterion: ClassVar[str]
    #: Whether training keeps the weights that score best on the validation split.
    selects_on_validation: ClassVar[bool] = False
    #: Whether inputs are volumes (3-D convolutions: the channels-last memory format applies).
    volumetric: ClassVar[bool] = False

    def out_channels(self, output: str) -> int:
        """Logit channels under the output convention ``output``."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, target: torch.Tensor, output: str) -> dict[str, torch.Tensor]:
        """The task loss as named terms."""
        raise NotImplementedError

    def probabilities(self, logits: torch.Tensor, output: str) -> torch.Tensor:
        """Logits to probabilities under ``output``."""
        raise NotImplementedError

    def to_labels(self, probs: np.ndarray, output: str) -> np.ndarray:
        """Probabilities to predicted labels, so every method is scored alike."""
        raise NotImplementedError

    def split(self, dataset: Dataset, name: str) -> Any:
        """The data of split ``name`` ('train', 'val', 'test', or a data set's extra split), sized with len()."""
        raise NotImplementedError

    def split_masks(self, splits: dict[str, Any], missing: dict[str, Any], rate: float, modalities: tuple[str, ...],
                    seed: int) -> dict[str, np.ndarray | None]:
        """A classification missing-rate protocol's fixed availability per split (N x M, or None: the protocol's
        subsets); the training-only schemes of every task are made by the engine (missbench/engine/context.py)."""
        raise ValueError(f"per-sample missing masks need a classification data set, not {self.name}")

    def batches(self, data: Any, batch: int, patch: tuple[int, int, int] | None, rng: np.random.Generator, seed: int,
                masks: np.ndarray | None = None, sampler: str = "shaspec") -> Batches:
        """Training batches of ``data`` (``rng`` draws patches and their augmentation; ``seed`` orders epochs), each
        sample with its row of ``masks`` (N x M) where given; ``sampler`` names the patch pipeline on volumes
        (missbench/core/tasks/sampling.py)."""
        raise NotImplementedError

    def evaluate(self, method: nn.Module, data: Any, subsets: list[Subset], settings: EvalSettings, exe: Execution,
                 masks: np.ndarray | None = None, timer: PhaseTimer | None = None) -> list[dict[str, Any]]:
        """Long-format result rows of ``method`` on ``data`` for every subset (or, with ``masks``, each
        sample with its own availability), every subset on the same samples in the same order."""
        raise NotImplementedError

    def inference_pass(self, method: nn.Module, data: Any, settings: EvalSettings, exe: Execution,
                       batch: int) -> Callable[[], None]:
        """One inference pass with every modality present, for the timing protocol."""
        raise NotImplementedError

    def feature_views(self, method: nn.Module, data: Any, settings: EvalSettings, exe: Execution) -> dict[str, np.ndarray] | None:
        """The method's `Method.feature_views` per test sample, stacked, or None when it has none."""
        return None

    def selection_score(self, rows: list[dict[str, Any]]) -> float:
        """The model-selection score of evaluation rows: the mean of the primary metric."""
        return float(np.mean([r["value"] for r in rows if r["metric"] == self.primary_metric]))
