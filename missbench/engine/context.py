"""What a run body receives (`Context`: the data set and method built from the request, placed on the
device, with its settings) and what it returns (`Outcome`: rows and meta before the skeleton stamps
and stores them); how a method is built for a model, and how a score's settings and masks are made."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from missbench.core.availability import TRAINING_SCHEMES, mask_hash, missing_by_modality, missing_share, training_masks
from missbench.core.dataset import SPLITS, Dataset, attribute_values
from missbench.core.execution import Execution, PhaseTimer
from missbench.core.method import Method
from missbench.core.subsets import Subset, parse_subset
from missbench.core.tasks import Task, get_task
from missbench.core.tasks.base import EvalSettings
from missbench.core.training import TrainingDefaults
from missbench.experiment import registry
from missbench.experiment.spec import ModelSpec, RunSpec, ScoreSpec
from missbench.store.run_folder import ModelFolder


@dataclass
class Context:
    """One model's training, built: everything a body needs. ``selection``: the validation subsets of a task
    that keeps the best weights; ``settings``: the request's evaluation settings (validation, timing)."""

    spec: RunSpec
    exe: Execution
    folder: ModelFolder
    dataset: Dataset
    method: Method
    cfg: TrainingDefaults
    selection: list[Subset]
    settings: EvalSettings
    #: A missing-rate protocol's fixed availability per split (None: drawn, or the protocol's subsets).
    masks: dict[str, np.ndarray | None]
    timers: dict[str, PhaseTimer]

    @property
    def model(self) -> ModelSpec:
        return self.spec.model

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


def build_method(model: ModelSpec, dataset: type[Dataset] | Dataset) -> Method:
    """A freshly initialised method of ``model`` for ``dataset``'s task and modalities, seeded with the model's
    seed (so the init is reproducible)."""
    cls = registry.method_class(model.method)
    if dataset.task not in cls.tasks:
        raise ValueError(f"method {model.method!r} does not support task {dataset.task!r} of data set {dataset.name!r}")
    params = dataset.task_params() if isinstance(dataset, Dataset) else {}
    torch.manual_seed(model.derived_seed)
    return cls(get_task(dataset.task, **params), dataset.modalities, **model.method_params)


def build(spec: RunSpec) -> tuple[Dataset, Method]:
    """The training data set and a freshly initialised method of a request."""
    dataset = registry.dataset_class(spec.model.dataset)(**spec.train_data)
    return dataset, build_method(spec.model, dataset)


def eval_settings(model: ModelSpec, score: ScoreSpec, dataset: type[Dataset] | Dataset) -> EvalSettings:
    """A score's sliding windows (the model's training patch, the score's overlap and weighting) and metric policy."""
    window = score.window or {}
    return EvalSettings(model.patch, window.get("overlap", 0.5), window.get("weighting", "uniform"),
                        score.policy(dataset.et_threshold))


def split_masks(task: Task, dataset: Dataset, model: ModelSpec) -> dict[str, np.ndarray | None]:
    """A missing-rate model's fixed availability per split of ``dataset`` (None everywhere without one); the
    incomplete-training schemes mask the training split only, on any task."""
    if not model.missing:
        return dict.fromkeys(SPLITS)
    if model.missing["scheme"] in TRAINING_SCHEMES:
        name = model.missing.get("attribute")
        attributes = {name: attribute_values(dataset, "train", name)} if name else {}
        train = training_masks(model.missing, model.missing_rate, len(dataset.case_ids("train")), dataset.modalities,
                               attributes, model.mask_seed)
        return {"train": train, "val": None, "test": None}
    return task.split_masks({s: task.split(dataset, s) for s in SPLITS}, model.missing, model.missing_rate,
                            dataset.modalities, model.mask_seed)


def context(spec: RunSpec, exe: Execution, folder: ModelFolder) -> Context:
    """Build the training of ``spec``'s model: data set, method (placed and compiled as ``exe`` says), settings, masks."""
    dataset, method = build(spec)
    task = method.task
    exe.place(method, task.volumetric)
    return Context(
        spec=spec, exe=exe, folder=folder, dataset=dataset, method=method,
        cfg=type(method).training_for(task.name).replace(**spec.model.training),
        selection=[parse_subset(s, dataset.modalities) for s in spec.model.selection],
        settings=EvalSettings(spec.model.patch, spec.model.timing["overlap"], spec.model.timing["window"]) if spec.model.timing
        else eval_settings(spec.model, spec.score, dataset), masks=split_masks(task, dataset, spec.model),
        timers={part: PhaseTimer(exe.profile, exe.torch_device) for part in ("train", "evaluate")},
    )


def mask_meta(masks: dict[str, np.ndarray | None], modalities: tuple[str, ...], splits: tuple[str, ...] = SPLITS) -> dict[str, Any]:
    """Per split of ``splits`` that has fixed masks, for meta.json: the realised missing share (``missing_share``) and
    missing rate of each modality (``missing_by_modality``), and the masks' hash (``mask_hash``: equal hashes, equal
    masks, whichever method trained on them)."""
    fixed = {s: m for s, m in masks.items() if m is not None and s in splits}
    if not fixed:
        return {}
    return {"missing_share": {s: missing_share(m) for s, m in fixed.items()},
            "missing_by_modality": {s: missing_by_modality(m, modalities) for s, m in fixed.items()},
            "mask_hash": {s: mask_hash(m) for s, m in fixed.items()}}
