"""``run(spec)``: the one function every executor calls. Data set -> method -> train -> evaluate -> store."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from missbench import provenance, registry
from missbench.evaluate import evaluate
from missbench.method import Method, count_parameters
from missbench.spec import Execution, RunSpec, canonical
from missbench.store import DONE, is_done, write_atomic, write_json, write_rows
from missbench.subsets import parse_subset
from missbench.tasks import get_task
from missbench.train import train

log = logging.getLogger("missbench")


def build(spec: RunSpec) -> tuple[object, Method]:
    """The data set and a freshly initialised method of ``spec`` (seeded, so the init is reproducible)."""
    dataset = registry.dataset_class(spec.dataset)(**spec.dataset_params)
    cls = registry.method_class(spec.method)
    if dataset.task not in cls.tasks:
        raise ValueError(f"method {spec.method!r} does not support task {dataset.task!r} of data set {spec.dataset!r}")
    torch.manual_seed(spec.derived_seed)
    method = cls(get_task(dataset.task), dataset.modalities, **spec.method_params)
    return dataset, method


def run(spec: RunSpec, sweep_dir: Path, exe: Execution = Execution(), force: bool = False) -> str:
    """Run one spec into ``sweep_dir/<run_id>``; returns "done", or "skipped" if it had finished before."""
    run_dir = sweep_dir / spec.run_id
    if is_done(run_dir) and not force:
        return "skipped"
    dev = exe.torch_device
    dataset, method = build(spec)
    cfg = type(method).training.replace(**spec.training)
    subsets = [parse_subset(s, dataset.modalities) for s in spec.eval_subsets]
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_path = run_dir / "spec.json"
    if spec_path.exists() and json.loads(spec_path.read_text()) != json.loads(canonical(spec.to_dict())):
        raise RuntimeError(f"{spec_path} holds a different spec than run {spec.run_id}; refusing to overwrite it")
    write_json(spec_path, spec.to_dict())
    (run_dir / DONE).unlink(missing_ok=True)
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.info("run %s: %s on %s, protocol %s, train subset %s, seed %d", spec.run_id, spec.method, spec.dataset,
                 spec.protocol, spec.train_subset or f"random ({cfg.dropout})", spec.seed)
        method.to(dev, memory_format=torch.channels_last_3d if exe.channels_last else torch.contiguous_format)
        train_cases = [dataset.load(c) for c in dataset.case_ids("train")]
        t0 = time.perf_counter()
        last = train(method, train_cases, spec, cfg, run_dir, exe)
        t_train = time.perf_counter() - t0
        del train_cases
        test_ids = dataset.case_ids("test")
        t0 = time.perf_counter()
        rows = evaluate(method, (dataset.load(c) for c in test_ids), subsets, spec, exe)
        t_eval = time.perf_counter() - t0
        frame = pd.DataFrame(rows)
        for key, value in {
            "run_id": spec.run_id, "method": spec.method, "variant": spec.variant, "dataset": spec.dataset, "protocol": spec.protocol,
            "mode": spec.mode, "budget": spec.budget_name, "train_subset": spec.train_subset or "random",
            "seed": spec.seed, "split": "test", "empty_policy": spec.metric["empty"], "et_threshold": spec.metric["et_threshold"],
        }.items():
            frame[key] = value
        write_rows(run_dir / "rows.parquet", frame)
        meta = {
            "run_id": spec.run_id, "spec": spec.to_dict(), "training_config": asdict(cfg),
            "method_citation": type(method).citation, "parameters": count_parameters(method),
            "derived_seed": spec.derived_seed, "final_losses": last, "n_test_cases": len(test_ids),
            "timings": {"train_seconds": t_train, "train_seconds_per_iteration": t_train / max(spec.budget.iterations, 1),
                        "eval_seconds": t_eval, "eval_seconds_per_case": t_eval / max(len(test_ids), 1)},
            "execution": asdict(exe), "memory": provenance.peak_memory_mib(dev), "versions": provenance.versions(),
            **provenance.git_state(registry.ROOT), **provenance.device_info(dev),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json(run_dir / "meta.json", meta)
        write_atomic(run_dir / DONE, b"")
        log.info("run %s done: train %.1f s, eval %.1f s", spec.run_id, t_train, t_eval)
    finally:
        log.removeHandler(handler)
        handler.close()
    return "done"
