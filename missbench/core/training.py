"""Training settings as data: optimiser, learning-rate schedule and modality dropping, and the presets
that several methods share (a preset used by one method lives in that method's file).

A method declares its paper's settings per task (`Method.training_defaults`); a protocol's
``training:`` block and ``--training KEY=VALUE`` override them for every method of a comparison.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from missbench.core.availability import DROPOUT_SCHEMES
from missbench.core.params import Between, OneOf, Rule, check_params
from missbench.core.tasks.sampling import SAMPLERS

OPTIMIZERS = ("sgd", "adam")
#: ``poly``: (1 - t)^0.9 over the whole budget (RFNet's and mmFormer's lr_scheduler.py, per epoch there);
#: ``two_stage_poly``: ShaSpec's run.sh, two runs of train_SS.py (``lr_poly``: lr (1 - i / num_steps)^0.9): the
#: full-modality warm-up (80,000 iterations) with its own poly, (1 - step / warm-up)^0.9, then the random-
#: dropping run resumed at the warm-up's end with ``num_steps`` 180,000, (1 - step / budget)^0.9, so the rate
#: jumps back up at the boundary (to 0.59 of the base rate at 80k of 180k). Mean over the warm-up: 1 / 1.9 =
#: 0.526 of the base rate (a single poly over the budget gives 0.797 there). The code repeats the iteration at
#: the boundary (79,999 ends the first run and starts the second); here it is not repeated.
SCHEDULES = ("cosine", "poly", "two_stage_poly", "constant", "step")


@dataclass(frozen=True)
class TrainingDefaults:
    """Optimiser, schedule and modality-dropout scheme a method's paper or official code uses.

    ``dropout`` names a scheme in `missbench.core.availability`; ``warmup_fraction`` of the budget is
    trained with every modality present before dropping starts (ShaSpec's run.sh: 80k of 180k iterations).
    ``sampler`` names the pipeline that draws and augments training patches on volumes
    (`missbench.core.tasks.sampling`: "shaspec", "rfnet", "uniform"); whole samples (classification) have none.
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
    sampler: str = "shaspec"

    def __post_init__(self) -> None:
        check_params("training", asdict(self), TRAINING_DEFAULTS, TRAINING_RULES)

    def replace(self, **changes: Any) -> "TrainingDefaults":
        """A copy with ``changes`` applied; an unknown name or a bad value is a `ParamError`."""
        check_params("training", changes, TRAINING_DEFAULTS, TRAINING_RULES)
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
        if self.schedule == "two_stage_poly":
            warm = int(round(self.warmup_fraction * total))  # the boundary the trainer uses (engine/train.py)
            if step < warm:
                return (1 - step / warm) ** 0.9
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


#: Each training setting's default (its type) and allowed values: what a protocol's ``training:`` block
#: and ``--training KEY=VALUE`` may set.
TRAINING_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(TrainingDefaults)}
TRAINING_RULES: dict[str, Rule] = {
    "optimizer": OneOf(*OPTIMIZERS), "lr": Between(0, low_open=True), "momentum": Between(0, 1, high_open=True),
    "weight_decay": Between(0), "schedule": OneOf(*SCHEDULES), "step_every": Between(0, 1, low_open=True),
    "step_gamma": Between(0, 1, low_open=True), "dropout": OneOf(*DROPOUT_SCHEMES), "warmup_fraction": Between(0, 1),
    "sampler": OneOf(*SAMPLERS),
}

#: ShaSpec's training (Wang et al., CVPR 2023, Sec. 4.2 "Implementation details"; code github.com/billhhh/ShaSpec
#: at 081fe7a, run.sh and train_SS.py): SGD Nesterov 0.99, lr 1e-2, no weight decay, cosine (the paper; the
#: code's schedule is ``two_stage_poly``), kept count uniform in 1..M after a full-modality warm-up of 80k of
#: 180k iterations, ShaSpec's patch pipeline. The reference methods (zero_fill, mean_fill) use it too, so they
#: differ from ShaSpec only in how they handle missing inputs.
SHASPEC_TRAINING = TrainingDefaults(
    optimizer="sgd", lr=1e-2, momentum=0.99, nesterov=True, weight_decay=0.0,
    schedule="cosine", dropout="count_then_subset", warmup_fraction=80 / 180, sampler="shaspec",
)

#: ShaSpec's avMNIST training (Wang et al., CVPR 2023, Sec. 4.2): Adam lr 1e-3, weight decay 1e-2, lr x0.9 every 20 of 60 epochs
#: (a third of the budget). ShaSpec uses it on classification, and so do zero_fill and mean_fill, so that
#: they differ from ShaSpec only in how they handle missing modalities (as SHASPEC_TRAINING on segmentation).
SHASPEC_AVMNIST_TRAINING = TrainingDefaults(optimizer="adam", lr=1e-3, weight_decay=1e-2, schedule="step",
                                            step_every=1 / 3, step_gamma=0.9, dropout="count_then_subset")

#: U-HeMIS / U-HVED training (github.com/ReubenDo/U-HVED at 1d293a87d496c52adafd69dbcea37767ac6a7ee8,
#: extensions/u_hved/config.ini, extensions/u_hved/application.py): Adam (TF defaults), lr 1e-3, no optimiser
#: weight decay (the L2 term is a loss term, `missbench.nets.uhemis.niftynet_l2`), kept-modality count
#: uniform in 1..M then a uniform subset, no warm-up. The code divides the learning rate by 4 every 10k
#: of its 60k iterations (U-HeMIS; U-HVED's file says every 10, which would stop training after ~100
#: iterations, so U-HeMIS's step is used for both), expressed as a fraction of the budget. Patches: the
#: uniform sampler (config.ini ``window_sampling = uniform``; its flips and +-10% scaling are not reproduced).
UHVED_TRAINING = TrainingDefaults(
    optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="step", step_every=1 / 6, step_gamma=0.25,
    dropout="count_then_subset", warmup_fraction=0.0, sampler="uniform",
)
