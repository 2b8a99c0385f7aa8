"""``bench.py export``: label maps of a finished model, one NIfTI per case, for the BraTS portal.

Protocol B (ShaSpec, MoMKE, SimMLM) is scored online: the model trained on every training case
predicts the official validation cases (the data set's ``export`` split), and each label map is
written in the original geometry (the data set pastes it into the original grid with the original
affine and header) and label convention ({0,1,2,4}; {0,1,2,3} for BraTS 2023). One folder per
evaluation subset, because the portal scores one submission per missing-modality setting:

    <out>/<model_id>/<subset>/<case_id>.nii.gz     <out>/<model_id>/export.json (options, for the record)

The model is loaded and placed on the device as scoring places it (memory format, compilation), and
predicts with its first score's windows, so an exported map is the map that score scored.

ET post-processing (``--et-postprocess``, off by default): a predicted ET of fewer than the data
set's ``et_threshold`` voxels (500 for BraTS) is relabelled necrotic core (label 1), as step 3 of
ShaSpec's ``postprocess.py`` (github.com/billhhh/ShaSpec at 081fe7a, ``NUM_pixels = 500``); it is recorded in export.json. Files are
written atomically; existing ones are kept (a rerun resumes), and an export folder made with other
options is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from missbench.core.execution import Execution
from missbench.core.inference import subset_predictor
from missbench.core.regions import REGION_LABELS
from missbench.core.subsets import parse_subset
from missbench.core.tasks.segmentation import predict_case
from missbench.engine.context import eval_settings
from missbench.engine.run import load_model
from missbench.experiment import registry
from missbench.experiment.root import root
from missbench.experiment.spec import ScoreSpec
from missbench.store import provenance
from missbench.store.run_folder import ModelFolder, sweep_models, write_json
from missbench.store.state import State


class ExportError(ValueError):
    """A run that cannot be exported; the message names the folder."""


def et_postprocess(labels: np.ndarray, threshold: int) -> np.ndarray:
    """Relabel all ET (4) as necrotic core (1) when fewer than ``threshold`` ET voxels are predicted."""
    et = labels == REGION_LABELS["ET"][0]
    if 0 < et.sum() < threshold:
        labels = labels.copy()
        labels[et] = 1
    return labels


def model_folders(path: Path) -> list[ModelFolder]:
    """``path`` itself if it is a model folder, else its finished models (a sweep)."""
    folder = ModelFolder(path)
    if folder.has_spec():
        state = folder.state()
        if state is not State.DONE:
            raise ExportError(f"{path}: the model has not finished (it is {state}); finish it first")
        return [folder]
    found = [m for m in sweep_models(path) if m.has_spec() and m.is_done()] if path.is_dir() else []
    if not found:
        raise ExportError(f"{path}: neither a finished model folder (model.json and DONE) nor a sweep holding one")
    return found


def export_model(folder: ModelFolder, out: Path, exe: Execution, subsets: list[str] | None = None, postprocess: bool = False,
                 dataset_params: dict[str, Any] | None = None) -> Path:
    """Write the label maps of one finished model into ``out/<model_id>``, predicted as its first score predicted
    (windows, weighting; the model loaded and placed as for scoring); returns that folder."""
    model = folder.spec()
    scores = folder.request().get("scores") or {}
    if not scores:
        raise ExportError(f"{folder.path}: the model has no score whose evaluation settings the export could follow")
    score = ScoreSpec.from_dict(next(iter(scores.values())))
    dataset = registry.dataset_class(model.dataset)(**{**folder.meta().get("dataset_params", {}), **(dataset_params or {})})
    if not dataset.can_export():
        raise ExportError(f"{folder.path}: data set {model.dataset!r} cannot write label maps (no write_label_map)")
    chosen = [parse_subset(s, dataset.modalities) for s in (subsets or [score.subsets[-1]])]
    settings = eval_settings(model, score, dataset)
    options = {"model_id": folder.model_id, "subsets": [s.label for s in chosen], "et_postprocess": postprocess,
               "et_threshold": settings.policy.et_threshold, "window": settings.window, "overlap": settings.overlap,
               "patch": list(settings.patch), "dataset_params": dataset.params}
    target = out / folder.model_id
    record = target / "export.json"
    keys = ("subsets", "et_postprocess", "et_threshold", "window")
    if record.exists():
        before = json.loads(record.read_text())
        if {k: before.get(k) for k in keys} != {k: json.loads(json.dumps(options[k])) for k in keys}:
            raise ExportError(f"{record} holds an export with other options; choose another --out")
    cases = dataset.case_ids("export")
    if not cases:
        raise ExportError(f"{folder.path}: data set {model.dataset!r} has no cases to export (give val_root= for protocol B)")
    method = load_model(folder, model, dataset, exe).eval()
    predict = subset_predictor(method, chosen)
    folders = [target / s.label for s in chosen]
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)
    write_json(record, options | provenance.git_state(root()))
    for case_id in tqdm(cases, desc=f"export {folder.model_id}", disable=not exe.progress, leave=False):
        paths = [f / f"{case_id}.nii.gz" for f in folders]
        if all(p.exists() for p in paths):
            continue
        case = dataset.load(case_id)
        for path, labels in zip(paths, predict_case(predict, method, case, settings, exe)):
            if postprocess:
                labels = et_postprocess(labels, settings.policy.et_threshold)
            dataset.write_label_map(case, labels, path)
    return target
