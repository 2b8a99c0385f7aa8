"""The `Method` contract every file in ``methods/`` implements, and the paper defaults it declares."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from missbench.core.availability import DROPOUT_SCHEMES
from missbench.core.tasks import Task

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "poly", "constant", "step")


@dataclass(frozen=True)
class TrainingDefaults:
    """Optimiser, schedule and modality-dropout scheme a method's paper or official code uses.

    ``dropout`` names a scheme in `missbench.core.availability`; ``warmup_fraction`` of the budget is trained
    with every modality present before dropping starts (ShaSpec's run.sh: 80k of 180k iterations).
    """

    optimizer: str = "sgd"
    lr: float = 1e-2
    momentum: float = 0.99
    nesterov: bool = True
    weight_decay: float = 0.0
    amsgrad: bool = False
    schedule: str = "poly"
    #: For ``schedule="step"``: multiply the rate by ``step_gamma`` every ``step_every`` of the budget.
    step_every: float = 1 / 6
    step_gamma: float = 0.25
    dropout: str = "count_then_subset"
    warmup_fraction: float = 0.0

    def __post_init__(self) -> None:
        for key, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("dropout", DROPOUT_SCHEMES)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"training {key} {getattr(self, key)!r}; expected one of {list(allowed)}")
        if not 0 <= self.warmup_fraction <= 1:
            raise ValueError(f"training warmup_fraction {self.warmup_fraction}; expected a number in [0, 1]")

    def replace(self, **changes: Any) -> "TrainingDefaults":
        """A copy with ``changes`` applied; unknown names are an error."""
        unknown = sorted(set(changes) - set(asdict(self)))
        if unknown:
            raise ValueError(f"unknown training setting {unknown[0]!r}; expected one of {sorted(asdict(self))}")
        return TrainingDefaults(**{**asdict(self), **changes})


#: ShaSpec's training (paper §4.2, run.sh): SGD Nesterov 0.99, lr 1e-2, no weight decay, cosine, kept
#: count uniform in 1..M after a full-modality warm-up of 80k of 180k iterations. The reference methods
#: (zero_fill, mean_fill) use it too, so they differ from ShaSpec only in how they handle missing inputs.
SHASPEC_TRAINING = TrainingDefaults(
    optimizer="sgd", lr=1e-2, momentum=0.99, nesterov=True, weight_decay=0.0,
    schedule="cosine", dropout="count_then_subset", warmup_fraction=80 / 180,
)


@dataclass
class Output:
    """What a forward pass returns: ``logits`` (B x C x ...) and named, already weighted loss terms."""

    logits: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)


class Method(nn.Module):
    """Base class of the methods.

    The harness zeroes missing modalities in ``x`` (B x M x ...) before the call and passes
    ``available`` (B x M booleans, per sample). A method that encodes each modality on its own
    implements ``encode`` (per-modality features, no availability needed) and ``decode`` (fusion and
    decoding for one availability pattern); evaluation then encodes each window once and decodes it
    for every subset. Others override ``forward`` and leave ``encode`` returning None.
    """

    name: ClassVar[str]
    citation: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ("segmentation",)
    #: Hyperparameters and their paper defaults; ``__init__`` refuses names not listed here.
    defaults: ClassVar[dict[str, Any]] = {}
    training: ClassVar[TrainingDefaults] = TrainingDefaults()
    #: "regions" (sigmoid ET/TC/WT) or "labels" (softmax over the task's classes).
    output: ClassVar[str] = "regions"

    def __init__(self, task: Task, modalities: tuple[str, ...], **params: Any) -> None:
        super().__init__()
        if task.name not in self.tasks:
            raise ValueError(f"method {self.name!r} does not support task {task.name!r} (supports {list(self.tasks)})")
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"method {self.name!r}: unknown parameter {unknown[0]!r}; expected one of {sorted(self.defaults)}"
            )
        self.task = task
        self.modalities = tuple(modalities)
        self.params: dict[str, Any] = {**self.defaults, **params}
        self.step, self.total_steps = 0, 1

    @property
    def n_modalities(self) -> int:
        return len(self.modalities)

    #: Training defaults on the tasks where they differ from ``training`` (e.g. ShaSpec's avMNIST run).
    training_by_task: ClassVar[dict[str, TrainingDefaults]] = {}

    @classmethod
    def training_for(cls, task_name: str) -> TrainingDefaults:
        """The training defaults on ``task_name``."""
        return cls.training_by_task.get(task_name, cls.training)

    def stage_steps(self, total: int) -> list[int]:
        """Iterations (of ``total``) at which the trainer calls `fit_stage`, in increasing order (default: none)."""
        return []

    def fit_stage(self, index: int, batches: Callable[[], Iterator[tuple[Any, torch.Tensor, torch.Tensor]]]) -> None:
        """Called once when training reaches ``stage_steps()[index]`` (e.g. to fit k-means centroids or freeze encoders).

        ``batches()`` iterates the training data once as (harness-zeroed x, available, target), the
        trainer having put the method in eval mode under no_grad. What this computes must live in
        buffers or parameters, so a checkpoint carries it and a resumed run does not refit.
        """

    def set_step(self, step: int, total: int) -> None:
        """Called by the trainer before each iteration, for losses switched on after a start (RFNet)."""
        self.step, self.total_steps = step, total

    def encode(self, x: torch.Tensor) -> list[Any] | None:
        """Per-modality features of ``x`` (one entry per modality), or None if the method cannot share them."""
        return None

    def decode(self, features: list[Any], available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        """Fuse per-modality ``features`` under ``available`` and decode; loss terms when ``target`` is given."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        features = self.encode(x)
        if features is None:
            raise NotImplementedError(f"{type(self).__name__} must implement encode/decode or forward")
        return self.decode(features, available, target)

    def task_loss(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The task's loss for this method's output convention, as named terms."""
        return self.task.loss(logits, target, self.output)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
