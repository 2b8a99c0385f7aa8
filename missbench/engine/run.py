"""``run(spec)``: the one run skeleton every executor calls, for both bodies.

Skeleton: claim the run folder (one process per run), build the data set and method (seeded, placed
on the device, compiled as the execution says), start the folder (spec.json), run the body, stamp
its rows with the spec, add provenance to its meta, and finish (rows.parquet, meta.json, DONE). A
failure anywhere is recorded in FAILED, with the execution options and whether it came from the
environment, and raised again. Bodies: `train_and_evaluate` (here) and the timing protocol's
`missbench.engine.timing.time_method`; both get the same `Context`, so every execution option
applies to both.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from missbench.core.execution import Execution
from missbench.core.method import count_parameters
from missbench.engine.context import Context, Outcome, context, mask_meta
from missbench.engine.selection import Selection
from missbench.engine.timing import time_method
from missbench.engine.train import train
from missbench.experiment import registry
from missbench.experiment.protocol import protocol_files
from missbench.experiment.registry import UnknownName
from missbench.experiment.root import root
from missbench.experiment.spec import RunSpec
from missbench.store import provenance
from missbench.store.run_folder import RunFolder

log = logging.getLogger("missbench")


def environmental(error: BaseException) -> bool:
    """Whether a failure came from the machine (files, memory, the device) rather than the experiment."""
    device_errors = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch, "AcceleratorError", None)) if t)
    return isinstance(error, (OSError, MemoryError, *device_errors))


def train_and_evaluate(ctx: Context) -> Outcome:
    """The experiment body: train on the training split (model selection on the validation split where the
    task selects), then score the test split on every evaluation subset."""
    spec, task, method, exe = ctx.spec, ctx.task, ctx.method, ctx.exe
    train_data = task.split(ctx.dataset, "train")
    selection = None
    if task.selects_on_validation:
        val = task.split(ctx.dataset, "val")
        if len(val):
            def score(m: object) -> float:
                return task.selection_score(task.evaluate(m, val, ctx.subsets, ctx.settings, exe, ctx.masks["val"]))

            selection = Selection(score, spec.budget.validation_period, task.selection_criterion)
        else:
            log.warning("no validation samples: the final weights are evaluated, without model selection")
    t0 = time.perf_counter()
    last = train(method, task, train_data, ctx.masks["train"], spec, ctx.cfg, ctx.folder, exe, selection, ctx.timers["train"])
    t_train = time.perf_counter() - t0
    del train_data
    test = task.split(ctx.dataset, "test")
    t0 = time.perf_counter()
    rows = task.evaluate(method, test, ctx.subsets, ctx.settings, exe, ctx.masks["test"], ctx.timers["evaluate"])
    t_eval = time.perf_counter() - t0
    views = task.feature_views(method, test, ctx.settings, exe)
    if views is not None:
        ctx.folder.write_features(list(ctx.dataset.case_ids("test")), method.modalities, views)
    n_test = len(test)
    meta = {
        "final_losses": last, "n_test_cases": n_test,
        "n_samples": {s: len(task.split(ctx.dataset, s)) for s in ("train", "val", "test")},
        "timings": {"train_seconds": t_train, "train_seconds_per_iteration": t_train / max(spec.budget.iterations, 1),
                    "eval_seconds": t_eval, "eval_seconds_per_case": t_eval / max(n_test, 1)},
        "memory": provenance.peak_memory_mib(exe.torch_device),
        **mask_meta(ctx.masks), **({"model_selection": selection.meta()} if selection is not None else {}),
    }
    return Outcome(rows, meta, {"train": t_train, "evaluate": t_eval})


def stamped(outcome: Outcome, spec: RunSpec, ctx: Context) -> pd.DataFrame:
    """The body's rows with the columns that say which run, spec and metric policy they belong to."""
    frame = pd.DataFrame(outcome.rows)
    for key, value in {
        "run_id": spec.run_id, "method": spec.method, "variant": spec.variant, "dataset": spec.dataset, "protocol": spec.protocol,
        "mode": spec.mode, "budget": spec.budget_name, "train_subset": spec.train_subset or "random", "seed": spec.seed,
        "split": "test", **ctx.settings.columns(),
        "missing_rate": spec.missing_rate if spec.missing_rate is not None else math.nan, **outcome.extra_columns,
    }.items():
        frame[key] = value
    return frame


def run_meta(spec: RunSpec, ctx: Context, outcome: Outcome) -> dict:
    """meta.json: the spec, what the method and data resolved to, the body's record and provenance."""
    dev = ctx.exe.torch_device
    return {
        "run_id": spec.run_id, "spec": spec.to_dict(), "training_config": asdict(ctx.cfg),
        "method_citation": type(ctx.method).citation, "parameters": count_parameters(ctx.method),
        "method_params_resolved": ctx.method.params, "derived_seed": spec.derived_seed, "data": ctx.dataset.run_meta(),
        **outcome.meta,
        "execution": asdict(ctx.exe), "versions": provenance.versions(), **provenance.git_state(root()),
        "plugin_files": plugin_files(spec, (type(ctx.method), type(ctx.dataset))),
        **provenance.device_info(dev), **provenance.scheduler_info(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def plugin_files(spec: RunSpec, classes: tuple[type, ...]) -> dict[str, str]:
    """SHA-256 of every plugin file the run used, by its path in the root: the files of its method and data
    set ``classes`` as they were imported, and the protocol file with the files it inherits from. A class
    or protocol from outside the root's plugin folders has no plugin file; the spec records what it set."""
    taken = dict(found for found in map(registry.imported_file, classes) if found is not None)
    try:
        protocols = protocol_files(registry.protocol_path(spec.protocol))
    except UnknownName:
        protocols = []
    return provenance.file_hashes([*taken, *protocols], root(), taken)


def run(spec: RunSpec, sweep_dir: Path, exe: Execution = Execution(), force: bool = False) -> str:
    """Run one spec into ``sweep_dir/<run_id>``; returns "done", or "skipped" if it had finished before.
    Raises `missbench.store.run_folder.RunBusy` when another process is running it, and
    `missbench.store.run_folder.NotRecorded` (one line, the failure chained) when the folder cannot be written."""
    folder = RunFolder(sweep_dir / spec.run_id)
    if folder.is_done() and not force:
        return "skipped"
    with folder.claim():
        if folder.is_done() and not force:  # finished by another process while this one waited to start
            return "skipped"
        try:
            ctx = context(spec, exe, folder)
            folder.start(spec, fresh=force)
            with folder.logging_to(log):
                log.info("run %s: %s on %s, protocol %s, train subset %s, seed %d", spec.run_id, spec.method, spec.dataset,
                         spec.protocol, spec.train_subset or f"random ({ctx.cfg.dropout})", spec.seed)
                outcome = (time_method if spec.mode == "timing" else train_and_evaluate)(ctx)
                if exe.profile:
                    folder.write_profile(profile(ctx, outcome))
                folder.finish(stamped(outcome, spec, ctx), run_meta(spec, ctx, outcome))
                log.info("run %s done: %s", spec.run_id, ", ".join(f"{k} {v:.1f} s" for k, v in outcome.walls.items()))
        except Exception as e:
            folder.fail(e, traceback.format_exc(), asdict(exe), environmental(e))
            raise
    return "done"


def profile(ctx: Context, outcome: Outcome) -> dict:
    """profile.json ({part: {phase: {seconds, calls, share}}}), also summarised in the log."""
    out = {part: ctx.timers[part].summary(wall) for part, wall in outcome.walls.items()}
    for part, phases in out.items():
        log.info("profile of %s (%.2f s): %s", part, outcome.walls[part],
                 ", ".join(f"{k} {v['seconds']:.2f} s ({v['share']:.0%})" for k, v in phases.items()))
    return out
