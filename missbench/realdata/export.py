"""``bench.py export``: label maps of a finished run's model, one NIfTI per case, for the BraTS portal.

Protocol B (ShaSpec, MoMKE, SimMLM) is scored online: the model trained on every training case
predicts the official validation cases (the data set's ``export`` split), and each label map is
written in the original geometry (the data set pastes it into the original grid with the original
affine and header; labels {0,1,2,4}). One folder per evaluation subset, because the portal scores
one submission per missing-modality setting:

    <out>/<run_id>/<subset>/<case_id>.nii.gz     <out>/<run_id>/export.json (options, for the record)

ET post-processing (``--et-postprocess``, off by default): a predicted ET of fewer than the data
set's ``et_threshold`` voxels (500 for BraTS) is relabelled necrotic core (label 1), as step 3 of
ShaSpec's ``postprocess.py`` (reference/shaspec.md §4); it is recorded in export.json. Files are
written atomically; existing ones are kept (a rerun resumes), and an export folder made with other
options is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from missbench.store import provenance
from missbench.experiment.registry import ROOT
from missbench.engine.evaluate import predict_case, subset_predictor
from missbench.engine.run import build
from missbench.experiment.spec import Execution, RunSpec
from missbench.store.run_folder import is_done, write_json
from missbench.core.subsets import parse_subset
from missbench.core.tasks.segmentation import REGION_LABELS


class ExportError(ValueError):
    """A run that cannot be exported; the message names the folder."""


def et_postprocess(labels: np.ndarray, threshold: int) -> np.ndarray:
    """Relabel all ET (4) as necrotic core (1) when fewer than ``threshold`` ET voxels are predicted."""
    et = labels == REGION_LABELS["ET"][0]
    if 0 < et.sum() < threshold:
        labels = labels.copy()
        labels[et] = 1
    return labels


def run_folders(path: Path) -> list[Path]:
    """``path`` itself if it is a run folder, else its finished run folders (a sweep)."""
    if (path / "spec.json").exists():
        if not is_done(path):
            raise ExportError(f"{path}: the run has not finished (no DONE file); finish it first")
        return [path]
    runs = sorted(p for p in path.iterdir() if is_done(p)) if path.is_dir() else []
    if not runs:
        raise ExportError(f"{path}: neither a finished run folder (spec.json and DONE) nor a sweep holding one")
    return runs


def export_run(run_dir: Path, out: Path, exe: Execution, subsets: list[str] | None = None, postprocess: bool = False,
               dataset_params: dict[str, Any] | None = None) -> Path:
    """Write the label maps of one finished run into ``out/<run_id>``; returns that folder."""
    spec = RunSpec.from_dict(json.loads((run_dir / "spec.json").read_text()))
    spec = replace(spec, dataset_params={**spec.dataset_params, **(dataset_params or {})})  # e.g. the data moved
    dataset, method = build(spec)
    if not hasattr(dataset, "write_label_map"):
        raise ExportError(f"{run_dir}: data set {spec.dataset!r} cannot write label maps (no write_label_map)")
    chosen = [parse_subset(s, dataset.modalities) for s in (subsets or [spec.eval_subsets[-1]])]
    options = {"run_id": run_dir.name, "subsets": [s.label for s in chosen], "et_postprocess": postprocess,
               "et_threshold": spec.metric["et_threshold"], "window": spec.metric.get("window", "uniform"),
               "overlap": spec.budget.overlap, "patch": list(spec.budget.patch), "dataset_params": dataset.params}
    target = out / run_dir.name
    record = target / "export.json"
    if record.exists():
        before = json.loads(record.read_text())
        if {k: before.get(k) for k in ("subsets", "et_postprocess", "et_threshold", "window")} != \
                {k: json.loads(json.dumps(options[k])) for k in ("subsets", "et_postprocess", "et_threshold", "window")}:
            raise ExportError(f"{record} holds an export with other options; choose another --out")
    cases = dataset.case_ids("export")
    if not cases:
        raise ExportError(f"{run_dir}: data set {spec.dataset!r} has no cases to export (give val_root= for protocol B)")
    state = torch.load(run_dir / "checkpoint.pt", map_location=exe.torch_device, weights_only=False)
    method.load_state_dict(state["model"])
    method.to(exe.torch_device).eval()
    predict = subset_predictor(method, chosen)
    folders = [target / s.label for s in chosen]
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)
    write_json(record, options | provenance.git_state(ROOT))
    for case_id in tqdm(cases, desc=f"export {run_dir.name}", disable=not exe.progress, leave=False):
        paths = [f / f"{case_id}.nii.gz" for f in folders]
        if all(p.exists() for p in paths):
            continue
        case = dataset.load(case_id)
        for path, labels in zip(paths, predict_case(predict, method, case, spec, exe)):
            if postprocess:
                labels = et_postprocess(labels, spec.metric["et_threshold"])
            dataset.write_label_map(case, labels, path)
    return target


def export_command(argv: list[str]) -> int:
    """``bench.py export RUN_OR_SWEEP --out DIR [--subsets all|A,B] [--et-postprocess] [--dataset-param K=V]``."""
    from missbench.cli import _key_values

    p = argparse.ArgumentParser(prog="bench.py export", description="Write one NIfTI label map per case of the data set's "
                                "export split (protocol B: the official validation cases) for each chosen subset.")
    p.add_argument("path", type=Path, help="a finished run folder, or a sweep folder (every finished run in it)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--subsets", default=None, help="comma-separated subsets, or 'all' for the run's evaluation subsets "
                   "(default: the last one, the full set)")
    p.add_argument("--et-postprocess", action="store_true", help="relabel a predicted ET under et_threshold voxels as necrotic core")
    p.add_argument("--dataset-param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a data set parameter of the run, e.g. val_root=DIR (paths only: a different recipe changes the model's input)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        overrides = _key_values(args.dataset_param, "--dataset-param")
        for run_dir in run_folders(args.path):
            spec = json.loads((run_dir / "spec.json").read_text())
            subsets = spec["eval_subsets"] if args.subsets == "all" else args.subsets.split(",") if args.subsets else None
            folder = export_run(run_dir, args.out, Execution(args.device, progress=not args.no_progress), subsets,
                                args.et_postprocess, overrides)
            print(f"exported {run_dir.name}: {folder}")
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"bench.py export: error: {e}", file=sys.stderr)
        return 2
    return 0
