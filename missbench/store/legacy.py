"""Run folders written before models and scores were separate (results version 0): one ``spec.json``
holding the whole run spec, its rows, meta and DONE beside it. The store reads each as a model (the
folder, its id the old run id) with one score (the folder itself, score id ``legacy``); its code is the
plugin hashes its meta.json recorded, its results version `LEGACY_VERSION`, so it never pools with runs
of the current engine and is never taken for one of their models.
"""

from __future__ import annotations

from typing import Any

from missbench.experiment.spec import LEGACY_VERSION

#: The score id of a legacy run's own score.
SCORE_ID = "legacy"


def _code(meta: dict[str, Any], folder: str) -> str:
    """The SHA-256 the run's meta.json recorded for its plugin file in ``folder`` (methods, datasets), else ""."""
    files = meta.get("plugin_files") or {}
    return next((sha for path, sha in sorted(files.items()) if path.startswith(f"{folder}/")), "")


def model_dict(spec: dict[str, Any], meta: dict[str, Any], model_id: str = "") -> dict[str, Any]:
    """The model of a legacy run, as a `ModelSpec` dict; ``model_id``: its folder's name, the id it keeps."""
    budget = spec.get("budget", {})
    out: dict[str, Any] = {
        "method": spec.get("method"), "method_params": spec.get("method_params", {}), "dataset": spec.get("dataset"),
        "dataset_params": spec.get("dataset_params", {}), "train_subset": spec.get("train_subset"), "seed": spec.get("seed"),
        "budget": {k: budget[k] for k in ("iterations", "batch", "patch", "val_every") if k in budget},
        "code": {"method": _code(meta, "methods"), "dataset": _code(meta, "datasets"), "version": LEGACY_VERSION},
    }
    for key in ("training", "missing", "missing_rate"):
        if spec.get(key) not in (None, {}):
            out[key] = spec[key]
    if spec.get("mode") == "timing":
        out["timing"] = dict(spec.get("metric", {}).get("timing", {}))
    if model_id:
        out["stored_id"] = model_id
    return out


def score_dict(spec: dict[str, Any], model_id: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The one score of a legacy run, as a `ScoreSpec` dict."""
    metric = {k: v for k, v in spec.get("metric", {}).items() if k not in ("window", "timing")}
    budget = spec.get("budget", {})
    window = {"overlap": budget["overlap"], "weighting": spec.get("metric", {}).get("window", "uniform")} \
        if budget.get("patch") is not None and "overlap" in budget else {}
    missing = spec.get("missing") or {}
    return {"model_id": model_id, "dataset": spec.get("dataset"), "dataset_params": spec.get("dataset_params", {}),
            "subsets": list(spec.get("eval_subsets", [])), "split": "test", "metric": metric, "window": window,
            "missing": {"eval": "masks"} if missing.get("eval") == "masks" else {},
            "code": {"dataset": _code(meta, "datasets"), "version": LEGACY_VERSION}}


def labels(spec: dict[str, Any]) -> dict[str, Any]:
    """The request labels of a legacy run: its protocol, mode and budget name."""
    return {k: spec.get(k) for k in ("protocol", "mode", "budget_name")}
