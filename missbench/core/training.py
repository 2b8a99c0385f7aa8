"""Training settings as data: optimiser, learning-rate schedule and modality dropping, and the presets
that several methods share (a preset used by one method lives in that method's file).

A method declares its paper's settings per task (`Method.training_defaults`); a protocol's
``training:`` block and ``--training KEY=VALUE`` override them for every method of a comparison.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from missbench.core.availability import DROPOUT_SCHEMES

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "poly", "constant", "step")


@dataclass(frozen=True)
class TrainingDefaults:
    """Optimiser, schedule and modality-dropout scheme a method's paper or official code uses.

    ``dropout`` names a scheme in `missbench.core.availability`; ``warmup_fraction`` of the budget is
    trained with every modality present before dropping starts (ShaSpec's run.sh: 80k of 180k iterations).
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

    def lr_factor(self, step: int, total: int) -> float:
        """Multiplier of the base learning rate at ``step`` of ``total`` under ``schedule``."""
        t = min(step / max(total, 1), 1.0)
        if self.schedule == "step":
            return self.step_gamma ** math.floor(t / self.step_every + 1e-9)
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        if self.schedule == "poly":
            return (1 - t) ** 0.9
        return 1.0  # constant

    def make_optimizer(self, params: Iterable[torch.nn.Parameter], fused: bool = False) -> torch.optim.Optimizer:
        """The optimiser over ``params`` (the trainable ones); ``fused``: PyTorch's fused kernel, one launch
        for all parameters (PyTorch refuses a device it has none for), else its default implementation."""
        kernel = {"fused": True} if fused else {}  # else PyTorch's default (foreach on CUDA, a loop on the CPU)
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov, weight_decay=self.weight_decay,
                                   **kernel)
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay, amsgrad=self.amsgrad, **kernel)


#: ShaSpec's training (paper §4.2, run.sh): SGD Nesterov 0.99, lr 1e-2, no weight decay, cosine, kept
#: count uniform in 1..M after a full-modality warm-up of 80k of 180k iterations. The reference methods
#: (zero_fill, mean_fill) use it too, so they differ from ShaSpec only in how they handle missing inputs.
SHASPEC_TRAINING = TrainingDefaults(
    optimizer="sgd", lr=1e-2, momentum=0.99, nesterov=True, weight_decay=0.0,
    schedule="cosine", dropout="count_then_subset", warmup_fraction=80 / 180,
)

#: ShaSpec's avMNIST training (paper §4.2): Adam lr 1e-3, weight decay 1e-2, lr x0.9 every 20 of 60 epochs
#: (a third of the budget). ShaSpec uses it on classification, and so do zero_fill and mean_fill, so that
#: they differ from ShaSpec only in how they handle missing modalities (as SHASPEC_TRAINING on segmentation).
SHASPEC_AVMNIST_TRAINING = TrainingDefaults(optimizer="adam", lr=1e-3, weight_decay=1e-2, schedule="step",
                                            step_every=1 / 3, step_gamma=0.9, dropout="count_then_subset")

#: U-HeMIS / U-HVED training (config.ini, application.py): Adam (TF defaults), lr 1e-3, no optimiser
#: weight decay (the L2 term is a loss term, `missbench.nets.uhemis.niftynet_l2`), kept-modality count
#: uniform in 1..M then a uniform subset, no warm-up. The code divides the learning rate by 4 every 10k
#: of its 60k iterations (U-HeMIS; U-HVED's file says every 10, which would stop training after ~100
#: iterations, so U-HeMIS's step is used for both), expressed as a fraction of the budget.
UHVED_TRAINING = TrainingDefaults(
    optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="step", step_every=1 / 6, step_gamma=0.25,
    dropout="count_then_subset", warmup_fraction=0.0,
)
