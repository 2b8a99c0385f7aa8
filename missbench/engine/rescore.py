"""Scores of finished models under other evaluation settings (``bench.py evaluate``): which models of a
store, and the score requests each gets. Scoring goes through the run skeleton (`missbench.engine.run`),
which finds the model finished and only scores, so a re-score's rows equal those of a fresh
train+score run with the same settings.

A request's settings start from a protocol's (its subsets, metric policy, window weighting and the
named budget's overlap) or, without one, from the model's first score; the command line then replaces
any of them, and a list of values per metric setting gives one score per combination.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from missbench.core.dataset import Dataset
from missbench.experiment import registry
from missbench.experiment.protocol import WINDOWS, Protocol, score_spec
from missbench.engine.run import check_code, check_disjoint, training_data
from missbench.experiment.spec import Budget, ModelSpec, RunSpec
from missbench.store.run_folder import ModelFolder, find_models, sweep_models


class NothingToScore(ValueError):
    """No finished model matches the selection; the message says what was found."""


@dataclass(frozen=True)
class Settings:
    """What the command line sets for every score (None: keep the protocol's or the model's)."""

    protocol: Protocol | None = None
    budget: str | None = None
    subsets: list[str] | None = None
    metric: dict[str, list[Any]] = field(default_factory=dict)
    window: str | None = None
    overlap: float | None = None
    dataset: str | None = None
    dataset_params: dict[str, Any] = field(default_factory=dict)


def finished_models(path: Path, methods: list[str] | None = None, model_ids: list[str] | None = None) -> list[ModelFolder]:
    """The finished, scorable models at ``path`` (a model folder, a sweep folder or a store), optionally only those
    of ``methods`` or with the ids ``model_ids``; a timing measurement is not a model to score."""
    folder = ModelFolder(path)
    folders = [folder] if folder.has_spec() else sweep_models(path) if (path / "jobs.json").exists() else \
        [ModelFolder(p) for p in find_models(path)]
    found = []
    for m in folders:
        if not m.has_spec() or not m.is_done():
            continue
        spec = m.spec_dict()
        if spec.get("timing") or methods is not None and spec.get("method") not in methods \
                or model_ids is not None and m.model_id not in model_ids:
            continue
        found.append(m)
    if not found:
        what = f" of {', '.join(methods)}" if methods else ""
        ids = f" with ids {', '.join(model_ids)}" if model_ids else ""
        raise NothingToScore(f"{path}: no finished model{what}{ids} to score (timing measurements are not scored)")
    return found


def _base(folder: ModelFolder) -> tuple[dict[str, Any], dict[str, Any]]:
    """(labels, first score spec) of a model: what a re-score without a protocol starts from."""
    request = folder.request()
    scores = request.get("scores") or {s.score_id: s.spec_dict() for s in folder.scores() if s.has_spec()}
    if not scores:
        raise NothingToScore(f"{folder.path}: the model has no score to start from; give --protocol")
    return request.get("labels", {}), next(iter(scores.values()))


def requests(folder: ModelFolder, settings: Settings) -> list[RunSpec]:
    """The score requests of one finished model under ``settings``: one per combination of the metric lists."""
    model = ModelSpec.from_dict(folder.spec_dict())
    check_code(model, ("method",))  # scored only by the method code that trained it
    meta = folder.meta()
    train_data = meta.get("dataset_params") or dict(model.dataset_params)
    labels, first = _base(folder) if settings.protocol is None else ({}, {})
    proto = settings.protocol
    eval_cls: type[Dataset] = registry.dataset_class(settings.dataset or first.get("dataset") or model.dataset)
    same = eval_cls.name == model.dataset
    eval_data = {**(train_data if same else {}), **settings.dataset_params}
    if proto is not None:
        name, budget, ds = proto.budget(settings.budget or None, eval_cls)
        eval_data = {**ds, **(train_data if same else {}), **settings.dataset_params}  # a released model records none
        labels = {"protocol": proto.name, "mode": proto.mode, "budget_name": name}
        subsets = proto.eval_subsets(eval_cls)
        if proto.mode == "dedicated" and proto.eval_on == "own" and model.train_subset:
            subsets = [model.train_subset]
        policy, window, overlap = proto.metric_policy(eval_cls), proto.metric.get("window", WINDOWS[0]), budget.overlap
    else:
        budget = None
        subsets = list(first.get("subsets", []))
        policy = {"et_threshold": eval_cls.et_threshold, **first.get("metric", {})}
        window = first.get("window", {}).get("weighting", WINDOWS[0])
        overlap = first.get("window", {}).get("overlap", 0.5)
    subsets = settings.subsets or subsets
    window = settings.window or window
    overlap = settings.overlap if settings.overlap is not None else overlap
    if not same or eval_data != train_data:  # another data set: refused here, before anything is written, if it overlaps
        spec = RunSpec(model, score_spec(model, eval_cls, eval_data, tuple(subsets), policy, window, overlap, model.missing),
                       budget or _budget(model, overlap), "", "", "", train_data, eval_data)
        trained_on = training_data(folder, spec)
        if trained_on is not None:
            check_disjoint(model, trained_on, eval_cls(**eval_data))
    keys = list(settings.metric)
    out = []
    for values in itertools.product(*(settings.metric[k] for k in keys)):
        score = score_spec(model, eval_cls, eval_data, tuple(subsets), {**policy, **dict(zip(keys, values))}, window, overlap,
                           model.missing)
        out.append(RunSpec(model, score, budget or _budget(model, overlap), labels.get("protocol", ""), labels.get("mode", ""),
                           labels.get("budget_name", ""), train_data, eval_data))
    return out


def _budget(model: ModelSpec, overlap: float) -> Budget:
    """A budget for scoring a model without a protocol: the model's training part and the score's overlap."""
    b = model.budget
    iterations = int(b.get("iterations", 1))
    return Budget(iterations, model.patch, int(b.get("batch", 1)), iterations, overlap, val_every=int(b.get("val_every", 0)))
