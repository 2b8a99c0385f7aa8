"""Tasks own their loss, label conventions, batching, inference and scoring; methods and data sets name one."""

from __future__ import annotations

from typing import Any

from missbench.core.tasks.base import Task


def get_task_class(name: str) -> type[Task]:
    """The task class called ``name``."""
    from missbench.core.tasks.classification import Classification
    from missbench.core.tasks.segmentation import Segmentation

    tasks = {Segmentation.name: Segmentation, Classification.name: Classification}
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(tasks)}")
    return tasks[name]


def get_task(name: str, **params: Any) -> Task:
    """The task called ``name``."""
    return get_task_class(name)(**params)
