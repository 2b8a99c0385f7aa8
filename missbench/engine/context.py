"""What a run body receives (`Context`: the data set and method built from the spec, placed on the
device, with its settings) and what it returns (`Outcome`: rows and meta before the skeleton stamps
and stores them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from missbench.core.availability import missing_share
from missbench.core.dataset import Dataset
from missbench.core.execution import Execution, PhaseTimer
from missbench.core.method import Method
from missbench.core.subsets import Subset, parse_subset
from missbench.core.tasks import Task, get_task
from missbench.core.tasks.base import EvalSettings
from missbench.core.training import TrainingDefaults
from missbench.experiment import registry
from missbench.experiment.spec import RunSpec
from missbench.store.run_folder import RunFolder

SPLITS = ("train", "val", "test")


@dataclass
class Context:
    """One run, built: everything a body needs."""

    spec: RunSpec
    exe: Execution
    folder: RunFolder
    dataset: Dataset
    method: Method
    cfg: TrainingDefaults
    subsets: list[Subset]
    settings: EvalSettings
    #: A missing-rate protocol's fixed availability per split (None: drawn, or the protocol's subsets).
    masks: dict[str, np.ndarray | None]
    timers: dict[str, PhaseTimer]

    @property
    def task(self) -> Task:
        return self.method.task


@dataclass
class Outcome:
    """What a body produced: result rows, its part of meta.json, wall seconds per part (train, evaluate)
    for profile.json, and columns of its own for every row."""

    rows: list[dict[str, Any]]
    meta: dict[str, Any]
    walls: dict[str, float]
    extra_columns: dict[str, Any] = field(default_factory=dict)


def build(spec: RunSpec) -> tuple[Dataset, Method]:
    """The data set and a freshly initialised method of ``spec`` (seeded, so the init is reproducible)."""
    dataset = registry.dataset_class(spec.dataset)(**spec.dataset_params)
    cls = registry.method_class(spec.method)
    if dataset.task not in cls.tasks:
        raise ValueError(f"method {spec.method!r} does not support task {dataset.task!r} of data set {spec.dataset!r}")
    torch.manual_seed(spec.derived_seed)
    method = cls(get_task(dataset.task, **dataset.task_params()), dataset.modalities, **spec.method_params)
    return dataset, method


def eval_settings(spec: RunSpec) -> EvalSettings:
    """The spec's sliding windows and metric policy."""
    return EvalSettings(spec.budget.patch, spec.budget.overlap, spec.metric.get("window", "uniform"), spec.metric_policy())


def context(spec: RunSpec, exe: Execution, folder: RunFolder) -> Context:
    """Build the run of ``spec``: data set, method (placed and compiled as ``exe`` says), settings, masks."""
    dataset, method = build(spec)
    task = method.task
    masks: dict[str, np.ndarray | None] = dict.fromkeys(SPLITS)
    if spec.missing:
        masks = task.split_masks({s: task.split(dataset, s) for s in SPLITS}, spec.missing, spec.missing_rate,
                                 dataset.modalities, spec.mask_seed)
    exe.place(method, task.volumetric)
    return Context(
        spec=spec, exe=exe, folder=folder, dataset=dataset, method=method,
        cfg=type(method).training_for(task.name).replace(**spec.training),
        subsets=[parse_subset(s, dataset.modalities) for s in spec.eval_subsets], settings=eval_settings(spec), masks=masks,
        timers={part: PhaseTimer(exe.profile, exe.torch_device) for part in ("train", "evaluate")},
    )


def mask_meta(masks: dict[str, np.ndarray | None]) -> dict[str, Any]:
    """The realised missing share per split that has fixed masks (meta.json ``missing_share``)."""
    shares = {s: missing_share(m) for s, m in masks.items() if m is not None}
    return {"missing_share": shares} if shares else {}
