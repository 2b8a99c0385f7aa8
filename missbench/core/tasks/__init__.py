"""Tasks own their loss, their label conventions and their inference; methods and data sets name one."""

from __future__ import annotations

from typing import Any, ClassVar

import torch


class Task:
    """Base class: ``name``, the number of output channels per convention, and the loss."""

    name: ClassVar[str]

    def out_channels(self, output: str) -> int:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, target: torch.Tensor, output: str) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def get_task(name: str, **params: Any) -> Task:
    """The task called ``name``."""
    from missbench.core.tasks.classification import Classification
    from missbench.core.tasks.segmentation import Segmentation

    tasks = {Segmentation.name: Segmentation, Classification.name: Classification}
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(tasks)}")
    return tasks[name](**params)
