"""``bench.py export``: label maps of a finished run's model, one NIfTI per case, for the BraTS portal.

Protocol B (ShaSpec, MoMKE, SimMLM) is scored online: the model trained on every training case
predicts the official validation cases (the data set's ``export`` split), and each label map is
written in the original geometry (the data set pastes it into the original grid with the original
affine and header) and label convention ({0,1,2,4}; {0,1,2,3} for BraTS 2023). One folder per
evaluation subset, because the portal scores one submission per missing-modality setting:

    <out>/<run_id>/<subset>/<case_id>.nii.gz     <out>/<run_id>/export.json (options, for the record)

ET post-processing (``--et-postprocess``, off by default): a predicted ET of fewer than the data
set's ``et_threshold`` voxels (500 for BraTS) is relabelled necrotic core (label 1), as step 3 of
ShaSpec's ``postprocess.py`` (reference/shaspec.md §4); it is recorded in export.json. Files are
written atomically; existing ones are kept (a rerun resumes), and an export folder made with other
options is refused.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from missbench.core.execution import Execution
from missbench.core.inference import subset_predictor
from missbench.core.regions import REGION_LABELS
from missbench.core.subsets import parse_subset
from missbench.core.tasks.segmentation import predict_case
from missbench.engine.context import build, eval_settings
from missbench.experiment.root import root
from missbench.store import provenance
from missbench.store.run_folder import RunFolder, write_json


class ExportError(ValueError):
    """A run that cannot be exported; the message names the folder."""


def et_postprocess(labels: np.ndarray, threshold: int) -> np.ndarray:
    """Relabel all ET (4) as necrotic core (1) when fewer than ``threshold`` ET voxels are predicted."""
    et = labels == REGION_LABELS["ET"][0]
    if 0 < et.sum() < threshold:
        labels = labels.copy()
        labels[et] = 1
    return labels


def run_folders(path: Path) -> list[RunFolder]:
    """``path`` itself if it is a run folder, else its finished run folders (a sweep)."""
    if RunFolder(path).has_spec():
        state = RunFolder(path).state()
        if state != "done":
            raise ExportError(f"{path}: the run has not finished (it is {state}); finish it first")
        return [RunFolder(path)]
    runs = sorted((f for f in map(RunFolder, path.iterdir()) if f.is_done()), key=lambda f: f.path) if path.is_dir() else []
    if not runs:
        raise ExportError(f"{path}: neither a finished run folder (spec.json and DONE) nor a sweep holding one")
    return runs


def export_run(run: RunFolder, out: Path, exe: Execution, subsets: list[str] | None = None, postprocess: bool = False,
               dataset_params: dict[str, Any] | None = None) -> Path:
    """Write the label maps of one finished run into ``out/<run_id>``; returns that folder."""
    spec = replace(run.spec(), dataset_params={**run.spec().dataset_params, **(dataset_params or {})})  # e.g. the data moved
    dataset, method = build(spec)
    if not dataset.can_export():
        raise ExportError(f"{run.path}: data set {spec.dataset!r} cannot write label maps (no write_label_map)")
    chosen = [parse_subset(s, dataset.modalities) for s in (subsets or [spec.eval_subsets[-1]])]
    options = {"run_id": run.run_id, "subsets": [s.label for s in chosen], "et_postprocess": postprocess,
               "et_threshold": spec.metric["et_threshold"], "window": spec.metric.get("window", "uniform"),
               "overlap": spec.budget.overlap, "patch": list(spec.budget.patch), "dataset_params": dataset.params}
    target = out / run.run_id
    record = target / "export.json"
    if record.exists():
        before = json.loads(record.read_text())
        if {k: before.get(k) for k in ("subsets", "et_postprocess", "et_threshold", "window")} != \
                {k: json.loads(json.dumps(options[k])) for k in ("subsets", "et_postprocess", "et_threshold", "window")}:
            raise ExportError(f"{record} holds an export with other options; choose another --out")
    cases = dataset.case_ids("export")
    if not cases:
        raise ExportError(f"{run.path}: data set {spec.dataset!r} has no cases to export (give val_root= for protocol B)")
    state = run.load_checkpoint(exe.torch_device)
    if state is None:
        raise ExportError(f"{run.path}: no loadable checkpoint.pt holds the trained model")
    method.load_state_dict(state["model"])
    method.to(exe.torch_device).eval()
    predict, settings = subset_predictor(method, chosen), eval_settings(spec)
    folders = [target / s.label for s in chosen]
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)
    write_json(record, options | provenance.git_state(root()))
    for case_id in tqdm(cases, desc=f"export {run.run_id}", disable=not exe.progress, leave=False):
        paths = [f / f"{case_id}.nii.gz" for f in folders]
        if all(p.exists() for p in paths):
            continue
        case = dataset.load(case_id)
        for path, labels in zip(paths, predict_case(predict, method, case, settings, exe)):
            if postprocess:
                labels = et_postprocess(labels, spec.metric["et_threshold"])
            dataset.write_label_map(case, labels, path)
    return target
