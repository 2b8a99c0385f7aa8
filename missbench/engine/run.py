"""``run(job)``: the one run skeleton every executor calls: one model and the scores asked of it.

Skeleton: claim the model folder (one process per model). Unless the model is finished there, link it
from a sibling sweep folder that finished the same model id, or build the data set and method
(seeded, placed on the device, compiled as the execution says), train (resuming from the checkpoint)
and finish the model (model.json, checkpoint, meta.json with provenance, DONE). Then each asked score
that is not done: the evaluation data set, the model (the one just trained, or the finished one
loaded from its checkpoint and placed as training places it: the same rows), its rows stamped with
the identities and labels, and the score's folder finished (score.json, rows, meta, DONE). Scoring
never trains. A failure in training is recorded in the model's FAILED, one in a score in that score's
FAILED (the other scores still run), each with the execution options and whether it came from the
environment, and raised again. The timing protocol's body (`missbench.engine.timing.time_method`)
measures instead of training: its rows are its model's one score.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from missbench.core.dataset import Dataset
from missbench.core.execution import Execution, PhaseTimer, set_threads
from missbench.core.method import Method, count_parameters
from missbench.core.subsets import parse_subset
from missbench.engine.checkpoint import final_weights
from missbench.engine.context import Context, build_method, context, eval_settings, mask_meta, split_masks
from missbench.engine.selection import Selection
from missbench.engine.timing import time_method
from missbench.engine.train import train
from missbench.experiment import registry
from missbench.experiment.registry import UnknownName
from missbench.experiment.root import PACKAGE_CHECKOUT, root
from missbench.experiment.spec import Job, ModelSpec, RunSpec, ScoreSpec
from missbench.store import provenance
from missbench.store.run_folder import ModelFolder, RunBusy, ScoreFolder

log = logging.getLogger("missbench")


#: Errors that end an attempt without saying anything of the experiment: the model stays `stopped` (no FAILED), so
#: a rerun resumes it. submitit raises UncompletedJobError in a job whose time limit came after its last requeue;
#: it is named, not imported, so that the engine needs no submitit.
STOPPED = ("UncompletedJobError",)


class CodeChanged(ValueError):
    """A plugin file differs from the one a model was planned or trained with."""


class Overlap(ValueError):
    """Evaluation cases that the model trained on (a score on another data set)."""


def environmental(error: BaseException) -> bool:
    """Whether a failure came from the machine (files, memory, the device) rather than the experiment."""
    device_errors = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch, "AcceleratorError", None)) if t)
    return isinstance(error, (OSError, MemoryError, *device_errors))


@contextlib.contextmanager
def recorded(artefact: ModelFolder | ScoreFolder, exe: Execution) -> Iterator[None]:
    """Record a failure inside the block in ``artefact``'s FAILED (the execution options, whether it came from the
    environment), then raise it again."""
    try:
        yield
    except RunBusy:  # another process holds the model now: its attempt is the one to record
        raise
    except Exception as e:
        if type(e).__name__ not in STOPPED:
            artefact.fail(e, traceback.format_exc(), asdict(exe), environmental(e))
        raise


def use_threads(threads: int | None) -> None:
    """Run with the CPU thread count a model or score names (its identity holds it); None: as the executor set."""
    if threads:
        set_threads(threads)


def check_code(model: ModelSpec, parts: tuple[str, ...] = ("method", "dataset")) -> None:
    """Refuse to train or score ``model`` when its method's (or data set's) plugin file, as this process imported
    it, is not the file the model names: edited since the run was planned, or since the model was trained."""
    classes = {"method": lambda: registry.method_class(model.method), "dataset": lambda: registry.dataset_class(model.dataset)}
    for part in parts:
        want = model.code.get(part)
        cls = classes[part]()
        found = registry.imported_file(cls)
        now = found[1] if found is not None else ""
        if want is not None and now != want:
            where = found[0] if found is not None else f"{part} {cls.name!r}"
            raise CodeChanged(f"{where} is not the code of model {model.model_id} (SHA-256 {now[:12] or 'none'}, the model's "
                              f"{want[:12] or 'none'}): it changed since the model was planned or trained; plan the run again "
                              f"(a new model id) or restore the file")


def provenance_meta(exe: Execution, classes: tuple[type, ...], protocol: str) -> dict[str, Any]:
    """What every meta.json records of how and where it was made."""
    engine = {f"engine_{k}": v for k, v in provenance.git_state(PACKAGE_CHECKOUT).items()}  # the code, wherever the root is
    return {"execution": asdict(exe), "versions": provenance.versions(), **provenance.git_state(root()), **engine,
            "plugin_files": plugin_files(protocol, classes), **provenance.device_info(exe.torch_device),
            **provenance.scheduler_info(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def plugin_files(protocol: str, classes: tuple[type, ...]) -> dict[str, str]:
    """SHA-256 of every plugin file used, by its path in the root: the files of the method and data set
    ``classes`` as they were imported, and the protocol file with the files it inherits from. A class or
    protocol from outside the root's plugin folders has no plugin file."""
    taken = dict(found for found in map(registry.imported_file, classes) if found is not None)
    try:
        protocols = registry.protocol_chain(registry.protocol_path(protocol))
    except UnknownName:
        protocols = []
    return provenance.file_hashes([*taken, *protocols], root(), taken)


# --- training ------------------------------------------------------------------------------------

def train_model(ctx: Context) -> dict[str, Any]:
    """Train the context's model on its training split (model selection on the validation split where the task
    selects); returns the training's part of the model's meta.json."""
    task, method, exe, model = ctx.task, ctx.method, ctx.exe, ctx.model
    train_data = task.split(ctx.dataset, "train")
    selection = None
    if task.selects_on_validation:
        val = task.split(ctx.dataset, "val")
        if len(val):
            settings = eval_settings(model, ScoreSpec(model.model_id, model.dataset, {}, model.selection), ctx.dataset)

            def score(m: object) -> float:
                return task.selection_score(task.evaluate(m, val, ctx.selection, settings, exe, ctx.masks["val"]))

            selection = Selection(score, ctx.spec.budget.validation_period, task.selection_criterion)
        else:
            log.warning("no validation samples: the final weights are evaluated, without model selection")
    t0 = time.perf_counter()
    last = train(method, task, train_data, ctx.masks["train"], ctx.spec, ctx.cfg, ctx.folder, exe, selection, ctx.timers["train"])
    t_train = time.perf_counter() - t0
    return {
        "final_losses": last, "n_samples": {s: len(task.split(ctx.dataset, s)) for s in ("train", "val")},
        "timings": {"train_seconds": t_train, "train_seconds_per_iteration": t_train / max(model.budget["iterations"], 1)},
        "memory": provenance.peak_memory_mib(exe.torch_device), **mask_meta(ctx.masks, ctx.dataset.modalities, ("train", "val")),
        **({"model_selection": selection.meta()} if selection is not None else {}),
    }


def model_meta(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    """A model's meta.json: its spec, the request that trained it, what the method and data resolved to, the
    body's record and provenance."""
    spec = ctx.spec
    return {
        "model_id": spec.model.model_id, "model": spec.model.to_dict(), "labels": spec.labels(),
        "dataset_params": ctx.dataset.params, "training_config": asdict(ctx.cfg), "method_citation": type(ctx.method).citation,
        "parameters": count_parameters(ctx.method), "method_params_resolved": ctx.method.params,
        "derived_seed": spec.model.derived_seed, "data": ctx.dataset.run_meta(), **body,
        **provenance_meta(ctx.exe, (type(ctx.method), type(ctx.dataset)), spec.protocol),
    }


def finished_elsewhere(folder: ModelFolder) -> ModelFolder | None:
    """A finished folder of the same model in another sweep of the store (the root's results/ folder), if the
    model's sweep lies in it."""
    store = (root() / "results").resolve()
    if folder.path.parent.parent.resolve() != store:
        return None
    try:
        siblings = sorted(p for p in store.iterdir() if p.is_dir() and p != folder.path.parent.resolve())
    except OSError:
        return None
    for sweep in siblings:
        other = ModelFolder(sweep / folder.model_id)
        if not other.legacy and other.has_spec() and other.is_done() and other.checkpoint_path.exists():
            return other
    return None


def obtain_model(job: Job, folder: ModelFolder, exe: Execution, force: bool) -> Context | None:
    """Make ``folder`` hold the job's finished model: linked from another sweep of the store that finished it (no
    context), or trained here (its context, the method in memory). A failure is recorded in the model's FAILED
    and raised."""
    if not force and (source := finished_elsewhere(folder)) is not None:
        folder.link_from(source)
        log.info("model %s: trained in %s; linked, not trained again", job.model_id, source.path)
        return None
    spec = job.first
    with recorded(folder, exe):
        check_code(spec.model)
        use_threads(spec.model.cpu_threads)
        ctx = context(spec, exe, folder)
        folder.start(spec.model, fresh=force)
        with folder.logging_to(log):
            log.info("model %s: %s on %s, train subset %s, seed %d", spec.model.model_id, spec.model.method, spec.model.dataset,
                     spec.model.train_subset or f"random ({ctx.cfg.dropout})", spec.model.seed)
            body = train_model(ctx)
            if exe.profile:
                folder.write_profile(profile(ctx, {"train": body["timings"]["train_seconds"]}))
            folder.finish(model_meta(ctx, body))
            log.info("model %s trained in %.1f s", spec.model.model_id, body["timings"]["train_seconds"])
    return ctx


# --- scoring -------------------------------------------------------------------------------------

def load_model(folder: ModelFolder, model: ModelSpec, dataset: Dataset, exe: Execution) -> Method:
    """The finished model of ``folder`` for scoring on ``dataset``: built from its spec by the code that trained it,
    placed on the device as training places it (memory format, compilation), its final weights loaded."""
    check_code(model, ("method",))
    trained_on = registry.dataset_class(model.dataset)
    if tuple(dataset.modalities) != tuple(trained_on.modalities) or dataset.task != trained_on.task:
        raise ValueError(f"model {model.model_id} was trained on {trained_on.name!r} ({trained_on.task}, "
                         f"{'+'.join(trained_on.modalities)}); {dataset.name!r} ({dataset.task}, {'+'.join(dataset.modalities)}) "
                         f"cannot be scored with it")
    method = build_method(model, dataset)
    exe.place(method, method.task.volumetric)
    method.load_state_dict(final_weights(folder.finished_checkpoint(exe.torch_device)))
    return method


def check_disjoint(model: ModelSpec, train_data: Dataset, dataset: Dataset) -> None:
    """Refuse a score whose test cases the model trained on: by case id, and, across data sets (other ids), by
    content (`Dataset.fingerprint`)."""
    trained = set(train_data.case_ids("train")) | (set(train_data.case_ids("val")) if model.selection else set())
    test = dataset.case_ids("test")
    shared = sorted(trained & set(test))
    if not shared and train_data.name != dataset.name:
        prints = {train_data.fingerprint(c): c for c in sorted(trained)}
        shared = sorted(f"{c} (= {prints[p]})" for c in test if (p := dataset.fingerprint(c)) in prints)
    if shared:
        raise Overlap(f"data set {dataset.name!r}: {len(shared)} test case(s) of the score are training cases of model "
                      f"{model.model_id} (trained on {train_data.name!r}; first: {', '.join(shared[:3])}); choose test cases it "
                      f"did not train on")


def evaluate(method: Method, dataset: Dataset, model: ModelSpec, score: ScoreSpec, exe: Execution,
             timer: Any = None) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any] | None]:
    """Score ``method`` on ``dataset``'s test split under ``score``: (rows, the score's part of meta.json, feature views)."""
    task = method.task
    settings = eval_settings(model, score, dataset)
    masks = split_masks(task, dataset, model)["test"] if score.missing else None
    subsets = [parse_subset(s, dataset.modalities) for s in score.subsets]
    test = task.split(dataset, "test")
    method.set_step(model.budget.get("iterations", 0), model.budget.get("iterations", 0))
    torch.manual_seed(model.derived_seed)  # whatever scoring draws, it draws the same in every process
    t0 = time.perf_counter()
    rows = task.evaluate(method, test, subsets, settings, exe, masks, timer)
    t_eval = time.perf_counter() - t0
    views = task.feature_views(method, test, settings, exe)
    meta = {"n_test_cases": len(test), "timings": {"eval_seconds": t_eval, "eval_seconds_per_case": t_eval / max(len(test), 1)},
            "memory": provenance.peak_memory_mib(exe.torch_device), **mask_meta({"test": masks}, dataset.modalities, ("test",))}
    return rows, meta, views


def stamped(rows: list[dict[str, Any]], spec: RunSpec, settings_columns: dict[str, Any],
            extra: dict[str, Any] | None = None) -> pd.DataFrame:
    """A score's rows with the columns that say which model, score, request and metric policy they belong to."""
    frame = pd.DataFrame(rows)
    model = spec.model
    for key, value in {
        "run_id": spec.run_id, "model_id": model.model_id, "score_id": spec.score.score_id, "method": model.method,
        "variant": model.variant, "dataset": spec.score.dataset, "protocol": spec.protocol, "mode": spec.mode,
        "budget": spec.budget_name, "train_subset": model.train_subset or "random", "seed": model.seed, "split": spec.score.split,
        **settings_columns, "missing_rate": model.missing_rate if model.missing_rate is not None else math.nan, **(extra or {}),
    }.items():
        frame[key] = value
    return frame


def training_data(folder: ModelFolder, spec: RunSpec) -> Dataset | None:
    """The data set a finished model trained on, as its meta records it (the location parameters of the scored data
    set filled in where the record has none, e.g. a released checkpoint's); None when nothing names its cases."""
    recorded = folder.meta().get("dataset_params") or {}
    if spec.model.released and not recorded:
        return None
    cls = registry.dataset_class(spec.model.dataset)
    location = {k: v for k, v in spec.eval_data.items() if k in cls.location_params} if spec.score.dataset == cls.name else {}
    return cls(**{**location, **recorded})


def training_mask_hash(folder: ModelFolder, model: ModelSpec) -> str:
    """The hash of a missing-rate model's training masks, as its meta.json records it ("" for other models): every
    row of its scores carries it (column ``mask_hash``), so a table can show that its methods shared their masks."""
    if not model.missing:
        return ""
    try:
        return str(folder.meta().get("mask_hash", {}).get("train", ""))
    except (OSError, ValueError):  # a model of an older store, without a readable meta.json
        return ""


def score_one(spec: RunSpec, folder: ModelFolder, trained: Context | None, exe: Execution, force: bool) -> None:
    """Score the finished model of ``folder`` under ``spec.score`` into its score folder. A failure is recorded in
    the score's FAILED and raised; the model and the other scores are left as they are."""
    target = folder.score(spec.score.score_id)
    with recorded(target, exe):
        target.start(spec.score, fresh=force)
        use_threads(spec.score.cpu_threads)
        same = spec.score.dataset == spec.model.dataset and spec.eval_data == spec.train_data
        dataset = trained.dataset if trained is not None and same else registry.dataset_class(spec.score.dataset)(**spec.eval_data)
        if not same:
            train_data = trained.dataset if trained is not None else training_data(folder, spec)
            if train_data is None:
                log.warning("model %s: no training cases are recorded (a released checkpoint whose manifest names none); "
                            "the score's test cases cannot be checked against them", spec.model.model_id)
            else:
                check_disjoint(spec.model, train_data, dataset)
        method = trained.method if trained is not None else load_model(folder, spec.model, dataset, exe)
        timer = PhaseTimer(exe.profile, exe.torch_device)
        rows, meta, views = evaluate(method, dataset, spec.model, spec.score, exe, timer)
        if exe.profile:
            target.write_profile({"evaluate": timer.summary(meta["timings"]["eval_seconds"])})
        if views is not None:
            target.write_features(list(dataset.case_ids("test")), method.modalities, views)
        trained_on = training_mask_hash(folder, spec.model)
        if trained_on:  # the model's training masks, beside any test masks of the score's own
            meta["mask_hash"] = {"train": trained_on, **meta.get("mask_hash", {})}
        frame = stamped(rows, spec, eval_settings(spec.model, spec.score, dataset).columns(),
                        {"mask_hash": trained_on} if trained_on else None)
        target.finish(frame, {"score_id": spec.score.score_id, "model_id": spec.model.model_id, "score": spec.score.to_dict(),
                              "labels": spec.labels(), "dataset_params": dataset.params, **meta,
                              **provenance_meta(exe, (type(method), type(dataset)), spec.protocol)})
        log.info("score %s of model %s: %d rows in %.1f s", spec.score.score_id, spec.model.model_id, len(frame),
                 meta["timings"]["eval_seconds"])


# --- the skeleton --------------------------------------------------------------------------------

def finished(folder: ModelFolder, job: Job) -> bool:
    """Whether the model and every score the job asks are done."""
    return folder.is_done() and all(folder.score(r.score.score_id).is_done() for r in job.runs)


def measure(job: Job, folder: ModelFolder, exe: Execution, force: bool) -> None:
    """The timing protocol: the measurement is the model's body, its rows the model's one score."""
    spec = job.first
    target = folder.score(spec.score.score_id)
    with recorded(folder, exe), recorded(target, exe):
        check_code(spec.model)
        use_threads(spec.model.cpu_threads)
        ctx = context(spec, exe, folder)
        folder.start(spec.model, fresh=force)
        target.start(spec.score, fresh=force)
        with folder.logging_to(log):
            outcome = time_method(ctx)
            if exe.profile:
                folder.write_profile(profile(ctx, outcome.walls))
            folder.finish(model_meta(ctx, outcome.meta))
            frame = stamped(outcome.rows, spec, ctx.settings.columns(), outcome.extra_columns)
            target.finish(frame, {"score_id": spec.score.score_id, "model_id": spec.model.model_id, "score": spec.score.to_dict(),
                                  "labels": spec.labels(), **outcome.meta,
                                  **provenance_meta(exe, (type(ctx.method), type(ctx.dataset)), spec.protocol)})


def run(job: Job | RunSpec, sweep_dir: Path, exe: Execution = Execution(), force: bool = False, train: bool = True) -> str:
    """Train (unless finished) and score one job's model in ``sweep_dir/<model_id>`` (a single request is a job of
    one score); returns "done", or "skipped" when everything had finished before. ``force`` trains and scores
    again; with ``train`` False (re-scoring) a model that is not finished is an error and ``force`` redoes the
    scores only. Raises
    `missbench.store.run_folder.RunBusy` when another process holds the model, and
    `missbench.store.run_folder.NotRecorded` (one line, the failure chained) when the folder cannot be written; a
    failed score is raised after the other scores ran."""
    job = Job((job,)) if isinstance(job, RunSpec) else job
    folder = ModelFolder(sweep_dir / job.model_id)
    if not force and finished(folder, job):
        return "skipped"
    with folder.claim():
        if not force and finished(folder, job):  # finished by another process while this one waited to start
            return "skipped"
        if not train and not folder.is_done():
            raise ValueError(f"model {job.model_id} is not finished ({folder.state()}); scoring does not train it")
        with recorded(folder, exe) if not folder.is_done() else contextlib.nullcontext():
            folder.ask(job.first.labels(), [r.score for r in job.runs])
        if job.model.timing:
            measure(job, folder, exe, force)
            return "done"
        retrain = force and train
        trained = obtain_model(job, folder, exe, retrain) if retrain or not folder.is_done() else None
        todo = [r for r in job.runs if force or not folder.score(r.score.score_id).is_done()]
        errors = []
        with folder.logging_to(log):
            for spec in todo:
                try:
                    score_one(spec, folder, trained, exe, force)
                except Exception as e:  # recorded in the score's FAILED; the other scores still run
                    errors.append(e)
        if errors:
            raise errors[0]
    return "done"


def profile(ctx: Context, walls: dict[str, float]) -> dict:
    """profile.json ({part: {phase: {seconds, calls, share}}}), also summarised in the log."""
    out = {part: ctx.timers[part].summary(wall) for part, wall in walls.items()}
    for part, phases in out.items():
        log.info("profile of %s (%.2f s): %s", part, walls[part],
                 ", ".join(f"{k} {v['seconds']:.2f} s ({v['share']:.0%})" for k, v in phases.items()))
    return out
