"""``run(spec)``: the one function every executor calls. Data set -> method -> train -> evaluate -> store."""

from __future__ import annotations

import io
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from missbench.store import provenance
from missbench.experiment import registry
from missbench.core.dataset import ClassificationDataset, Samples
from missbench.engine.evaluate import evaluate
from missbench.core.method import Method, count_parameters
from missbench.core.availability import missing_share, split_masks
from missbench.engine.profile import PhaseTimer, write_profile
from missbench.experiment.spec import Execution, RunSpec, canonical
from missbench.store.run_folder import DONE, is_done, write_atomic, write_json, write_rows
from missbench.core.subsets import Subset, parse_subset
from missbench.core.tasks import get_task
from missbench.engine.train import Selection, train

log = logging.getLogger("missbench")


def build(spec: RunSpec) -> tuple[object, Method]:
    """The data set and a freshly initialised method of ``spec`` (seeded, so the init is reproducible)."""
    dataset = registry.dataset_class(spec.dataset)(**spec.dataset_params)
    cls = registry.method_class(spec.method)
    if dataset.task not in cls.tasks:
        raise ValueError(f"method {spec.method!r} does not support task {dataset.task!r} of data set {spec.dataset!r}")
    torch.manual_seed(spec.derived_seed)
    method = cls(get_task(dataset.task, **dataset.task_params()), dataset.modalities, **spec.method_params)
    return dataset, method


@dataclass
class ClassificationData:
    """A classification run's splits, the protocol's availability masks per split (None: the subsets)."""

    samples: dict[str, Samples]
    masks: dict[str, np.ndarray | None]
    period: int

    def selection(self, method: Method, subsets: list[Subset], exe: Execution) -> Selection | None:
        """Model selection: mean accuracy on the validation split under the test conditions (never the test split)."""
        val = self.samples["val"]
        if not len(val):
            log.warning("no validation samples: the final weights are evaluated, without model selection")
            return None

        def score(m: Method) -> float:
            return float(np.mean([r["value"] for r in evaluate(m, val, subsets, None, exe, self.masks["val"])]))

        return Selection(score, self.period)

    def meta(self, selection: Selection | None) -> dict:
        out: dict = {"n_samples": {s: len(v) for s, v in self.samples.items()}}
        if any(m is not None for m in self.masks.values()):
            out["missing_share"] = {s: missing_share(m) for s, m in self.masks.items() if m is not None}
        if selection is not None:
            out["model_selection"] = {"split": "val", "score": "mean accuracy over the evaluation conditions",
                                      "selected_iteration": selection.best_step, "val_score": selection.best_score,
                                      "history": selection.history}
        return out


def classification_data(dataset: ClassificationDataset, spec: RunSpec) -> ClassificationData:
    """The splits of ``dataset`` and, for a missing-rate protocol, each split's masks (seeded by `RunSpec.mask_seed`)."""
    samples = {s: dataset.samples(s) for s in ("train", "val", "test")}
    masks: dict[str, np.ndarray | None] = dict.fromkeys(samples)
    if spec.missing:
        masks = split_masks(spec.missing, spec.missing_rate, {s: v.y for s, v in samples.items()}, dataset.modalities,
                            dataset.n_classes, spec.mask_seed)
    return ClassificationData(samples, masks, spec.budget.validation_period)


def open_run_dir(spec: RunSpec, run_dir: Path) -> None:
    """Create ``run_dir``, write spec.json (refusing a folder that holds another spec) and clear DONE."""
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_path = run_dir / "spec.json"
    if spec_path.exists() and json.loads(spec_path.read_text()) != json.loads(canonical(spec.to_dict())):
        raise RuntimeError(f"{spec_path} holds a different spec than run {spec.run_id}; refusing to overwrite it")
    write_json(spec_path, spec.to_dict())
    (run_dir / DONE).unlink(missing_ok=True)


def run(spec: RunSpec, sweep_dir: Path, exe: Execution = Execution(), force: bool = False) -> str:
    """Run one spec into ``sweep_dir/<run_id>``; returns "done", or "skipped" if it had finished before."""
    if spec.mode == "timing":
        from missbench.engine.timing import run_timing  # late import: timing builds on this module

        return run_timing(spec, sweep_dir, exe, force)
    run_dir = sweep_dir / spec.run_id
    if is_done(run_dir) and not force:
        return "skipped"
    dev = exe.torch_device
    dataset, method = build(spec)
    cfg = type(method).training_for(dataset.task).replace(**spec.training)
    subsets = [parse_subset(s, dataset.modalities) for s in spec.eval_subsets]
    open_run_dir(spec, run_dir)
    if force:  # a forced rerun trains from scratch instead of resuming from the finished run's checkpoint
        (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.info("run %s: %s on %s, protocol %s, train subset %s, seed %d", spec.run_id, spec.method, spec.dataset,
                 spec.protocol, spec.train_subset or f"random ({cfg.dropout})", spec.seed)
        volumes = exe.channels_last and dataset.task == "segmentation"  # 3-D convolutions only
        method.to(dev, memory_format=torch.channels_last_3d if volumes else torch.contiguous_format)
        if exe.compile:
            method.compile(backend=exe.compile)  # forward only; state-dict keys stay as they are
        timers = {phase: PhaseTimer(exe.profile, dev) for phase in ("train", "evaluate")}
        data = classification_data(dataset, spec) if isinstance(dataset, ClassificationDataset) else None
        train_cases = data.samples["train"] if data else [dataset.load(c) for c in dataset.case_ids("train")]
        selection = data.selection(method, subsets, exe) if data else None
        t0 = time.perf_counter()
        last = train(method, train_cases, spec, cfg, run_dir, exe, data.masks["train"] if data else None, selection, timers["train"])
        t_train = time.perf_counter() - t0
        del train_cases
        test_ids = dataset.case_ids("test")
        t0 = time.perf_counter()
        test = data.samples["test"] if data else (dataset.load(c) for c in test_ids)
        rows = evaluate(method, test, subsets, spec, exe, data.masks["test"] if data else None, timers["evaluate"])
        t_eval = time.perf_counter() - t0
        if exe.profile:
            write_profile(run_dir / "profile.json", timers, {"train": t_train, "evaluate": t_eval})
        frame = pd.DataFrame(rows)
        if data is None and hasattr(method, "feature_views"):
            save_features(method, dataset, test_ids, spec, exe, run_dir / "features.npz")
        for key, value in {
            "run_id": spec.run_id, "method": spec.method, "variant": spec.variant, "dataset": spec.dataset, "protocol": spec.protocol,
            "mode": spec.mode, "budget": spec.budget_name, "train_subset": spec.train_subset or "random",
            "seed": spec.seed, "split": "test", "empty_policy": spec.metric["empty"], "et_threshold": spec.metric["et_threshold"],
            "missing_rate": spec.missing_rate if spec.missing_rate is not None else math.nan,
        }.items():
            frame[key] = value
        write_rows(run_dir / "rows.parquet", frame)
        meta = {
            "run_id": spec.run_id, "spec": spec.to_dict(), "training_config": asdict(cfg),
            "method_citation": type(method).citation, "parameters": count_parameters(method),
            "method_params_resolved": method.params,
            "derived_seed": spec.derived_seed, "final_losses": last, "n_test_cases": len(test_ids),
            "timings": {"train_seconds": t_train, "train_seconds_per_iteration": t_train / max(spec.budget.iterations, 1),
                        "eval_seconds": t_eval, "eval_seconds_per_case": t_eval / max(len(test_ids), 1)},
            **(data.meta(selection) if data else {}),
            "execution": asdict(exe), "memory": provenance.peak_memory_mib(dev), "versions": provenance.versions(),
            **provenance.git_state(registry.ROOT), **provenance.device_info(dev), **provenance.scheduler_info(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json(run_dir / "meta.json", meta)
        write_atomic(run_dir / DONE, b"")
        log.info("run %s done: train %.1f s, eval %.1f s", spec.run_id, t_train, t_eval)
    finally:
        log.removeHandler(handler)
        handler.close()
    return "done"


def save_features(method: Method, dataset: object, case_ids: list[str], spec: RunSpec, exe: Execution, path: Path) -> None:
    """``features.npz`` for analysis: the method's ``feature_views`` (e.g. ShaSpec's pooled shared and specific
    features, case x modality x channel) of each test case's centre patch with every modality present."""
    views: dict[str, list[np.ndarray]] = {}
    method.eval()
    with torch.inference_mode():
        for cid in case_ids:
            image = torch.from_numpy(dataset.load(cid).image).float()
            box = tuple(slice(max(0, (s - p) // 2), max(0, (s - p) // 2) + p) for s, p in zip(image.shape[1:], spec.budget.patch))
            for key, value in method.feature_views(exe.prepare(image[(slice(None), *box)][None])).items():
                views.setdefault(key, []).append(value[0].float().cpu().numpy())
    buf = io.BytesIO()
    np.savez(buf, case_ids=np.array(case_ids), modalities=np.array(method.modalities), **{k: np.stack(v) for k, v in views.items()})
    write_atomic(path, buf.getvalue())
