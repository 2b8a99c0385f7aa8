"""Fabricated stores: model and score folders (model.json, request.json, log.txt, meta.json, score.json, rows.parquet,
DONE | FAILED) as the engine writes them, in any state (done, failed, stopped), in milliseconds instead of real
runs, for the report's tests (tests/report_store.py) and its speed benchmark (benchmarks/site_speed.py). A run is
described by one flat spec (`seg_spec`, the fields of a request) and stored as a model of the current results version
with one score; `fabricate` writes a whole benchmark's worth (about 1,000 runs over every protocol). Imports no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from missbench.core.subsets import all_subsets
from missbench.experiment.spec import SCORING_VERSION, TRAINING_VERSION, ModelSpec, ScoreSpec
from missbench.store import legacy
from missbench.store.run_folder import FAILED, LOG, ModelFolder, ScoreFolder
from missbench.store.state import State

MODS = ("FLAIR", "T1", "T1c", "T2")
LABELS = [s.label for s in all_subsets(MODS)]
SMOKE = {"iterations": 4, "batch": 1, "patch": [16, 16, 16], "checkpoint_every": 2, "log_every": 2, "overlap": 0.5}
#: Resolved parameters of the methods the fabricated runs pretend to be (meta.json method_params_resolved).
DEFAULTS = {"shaspec": {"alpha": 0.1, "beta": 0.02, "dao": "l1"}}


def write_run(sweep: Path, spec: dict[str, Any], rows: pd.DataFrame | None, meta: dict[str, Any], state: State = State.DONE,
              failure: str = "ValueError: boom") -> str:
    """A model folder for ``spec`` with its one score: model meta, DONE and the score's rows, meta and DONE when
    done; the model's FAILED (a traceback ending in ``failure``) when failed; model.json and request.json alone
    when stopped. Returns the run's key, ``<model id>/<score id>``."""
    model = legacy.model_dict(spec, {})
    evaluation = ("n_val", "n_test") if spec["dataset"] == "brats_synthetic" else ()  # brats_synthetic's evaluation_params
    model = ModelSpec.from_dict({**model, "dataset_params": {k: v for k, v in model["dataset_params"].items() if k not in evaluation},
                                 "code": {"method": "", "dataset": "", "version": TRAINING_VERSION}})
    score = ScoreSpec.from_dict({**legacy.score_dict(spec, model.model_id, {}), "code": {"dataset": "", "version": SCORING_VERSION}})
    folder = ModelFolder(sweep / model.model_id)
    folder.start(model, fresh=False)
    folder.ask(legacy.labels(spec), [score])
    run_id = f"{model.model_id}/{score.score_id}"
    write_log(folder, spec, state)
    if state == State.FAILED:  # a FAILED of plain traceback text, as older runs wrote it
        folder.file(FAILED).write_text(f"Traceback (most recent call last):\n  ...\n{failure}\n")
    elif state == State.DONE:
        folder.finish({"model_id": model.model_id, "model": model.to_dict(), "labels": legacy.labels(spec),
                       **{k: v for k, v in meta.items() if k != "timings"},
                       "timings": {k: v for k, v in meta.get("timings", {}).items() if k.startswith("train")}})
        for key, value in {"run_id": run_id, "model_id": model.model_id, "score_id": score.score_id, "method": spec["method"],
                           "variant": spec["method"], "dataset": spec["dataset"], "protocol": spec["protocol"], "mode": spec["mode"],
                           "budget": spec["budget_name"], "train_subset": spec.get("train_subset") or "random", "seed": spec["seed"],
                           "split": "test", "empty_policy": spec["metric"]["empty"], "et_threshold": spec["metric"]["et_threshold"],
                           "missing_rate": spec.get("missing_rate", np.nan)}.items():
            rows[key] = value
        target = folder.score(score.score_id)
        target.start(score, fresh=False)
        target.finish(rows, {"score_id": score.score_id, "model_id": model.model_id, "labels": legacy.labels(spec),
                             "timings": {k: v for k, v in meta.get("timings", {}).items() if k.startswith("eval")}})
    return run_id


def write_log(folder: ModelFolder, spec: dict[str, Any], state: State = State.DONE) -> None:
    """The model's log.txt as the trainer writes it: a line per ``log_every`` iterations with the learning rate and the
    loss terms (falling, seeded by the spec), stopping halfway for a run that did not finish."""
    budget = spec.get("budget") or {}
    total = int(budget.get("iterations", 4))
    every = max(1, int(budget.get("log_every") or total // 4))
    rng = np.random.default_rng(len(json.dumps(spec, sort_keys=True)) + int(spec.get("seed", 0)))
    lines = [f"2026-01-01 00:00:00,000 INFO model {folder.model_id}: {spec['method']} on {spec['dataset']}, seed {spec.get('seed')}"]
    end = total if state == State.DONE else max(every, total // 2)
    for step in range(every, end + 1, every):
        t = step / total
        terms = {"dice": 0.95 - 0.5 * t + 0.02 * rng.standard_normal(), "bce": 1.9 * np.exp(-3 * t) + 0.02 * rng.standard_normal()}
        terms = {k: round(float(v), 4) for k, v in terms.items()}
        terms["total"] = round(sum(terms.values()), 4)
        lines.append(f"2026-01-01 00:00:{step % 60:02d},000 INFO iteration {step} lr {0.01 * (1 - t) ** 0.9:.3g} {terms}")
    if state == State.FAILED:
        lines.append("2026-01-01 00:00:59,000 ERROR training failed")
    folder.file(LOG).write_text("\n".join(lines) + "\n")


def score_folder(sweep: Path, run_id: str) -> ScoreFolder:
    """The score folder of a run key ``<model id>/<score id>`` in ``sweep``."""
    model_id, score_id = run_id.split("/")
    return ModelFolder(sweep / model_id).score(score_id)


def seg_spec(method: str, seed: int, protocol: str = "non_dedicated", mode: str = "non_dedicated", params: dict | None = None,
             train_subset: str | None = None, n_cases: int = 20, training: dict | None = None, dataset: str = "brats_synthetic",
             dataset_params: dict | None = None, empty: str = "one", budget_name: str = "smoke", budget: dict | None = None) -> dict:
    """A segmentation run's spec, as RunSpec.to_dict writes it."""
    return {"protocol": protocol, "mode": mode, "method": method, "method_params": params or {}, "dataset": dataset,
            "dataset_params": {"n_test": n_cases, "size": 24, **(dataset_params or {})}, "train_subset": train_subset,
            "eval_subsets": [train_subset] if train_subset else LABELS, "seed": seed, "budget": budget or SMOKE,
            "budget_name": budget_name, "training": training or {}, "metric": {"empty": empty, "et_threshold": 50}}


def fake_run(sweep: Path, method: str, seed: int, *, skill: float = 0.5, state: State = State.DONE, failure: str = "ValueError: boom",
             case_skill: np.ndarray | None = None, **spec_args: Any) -> str:
    """A segmentation run: Dice and HD95 per case, subset and region drawn around ``skill`` (plus a per-case
    offset ``case_skill``), the spec from `seg_spec`."""
    spec = seg_spec(method, seed, **spec_args)
    n_cases = spec["dataset_params"]["n_test"]
    rng = np.random.default_rng([seed, int(skill * 1000), len(json.dumps(spec, sort_keys=True))])
    offsets = np.zeros(n_cases) if case_skill is None else case_skill
    rows = []
    for s in all_subsets(MODS):
        if s.label not in spec["eval_subsets"]:
            continue
        for c in range(n_cases):
            for region in ("ET", "ETpp", "TC", "WT"):
                dice = float(np.clip(skill + offsets[c] + 0.05 * len(s) + 0.05 * rng.standard_normal(), 0, 1))
                rows += [{"case_id": f"case{c:02d}", "eval_subset": s.label, "eval_code": s.code, "n_available": len(s),
                          "region": region, "metric": m, "value": v, "ref_voxels": 100, "pred_voxels": 90}
                         for m, v in (("dice", dice), ("hd95", 20 * (1 - dice)))]
    meta = {"parameters": 1000, "method_params_resolved": {**DEFAULTS.get(method, {}), **spec["method_params"]},
            "memory": {"peak_process_rss_mib": 500.0}, "device": "cpu", "device_name": "x86_64",
            "timings": {"train_seconds_per_iteration": 0.1, "eval_seconds_per_case": 0.2}}
    return write_run(sweep, spec, pd.DataFrame(rows), meta, state, failure)


def fake_timing_run(sweep: Path, method: str, batch: int, patch: int, budget_name: str, seconds: float,
                    memory_kind: str = "peak_process_rss_mib_lifetime") -> str:
    """A timing run (protocol timing) at one batch and patch: 3 timed iterations, 2 inference passes, peak memory."""
    spec = seg_spec(method, 0, "timing", "timing", budget_name=budget_name,
                    budget={**SMOKE, "batch": batch, "patch": [patch] * 3})
    spec["metric"]["timing"] = {"warmup": 1, "iterations": 3, "inference_warmup": 1, "inference_passes": 2}
    records = ([("train", f"iter{i}", "train_s_per_iter", seconds * (1 + i / 10)) for i in range(3)]
               + [("infer", f"pass{i}", "infer_s_per_case", seconds / 2) for i in range(2)]
               + [("train", "-", "peak_mem_mib", 600.0), ("infer", "-", "peak_mem_mib", 650.0), ("model", "-", "parameters", 1234.0)])
    rows = pd.DataFrame([{"case_id": c, "eval_subset": "FLAIR+T1+T1c+T2", "eval_code": 15, "n_available": 4, "region": phase,
                          "metric": metric, "value": value} for phase, c, metric, value in records])
    rows["memory_kind"], rows["shared_device"] = memory_kind, False
    meta = {"parameters": 1234, "device": "cpu", "device_name": "x86_64", "versions": {"torch": "2.13.0"},
            "timing": {"shared_device": False}}
    return write_run(sweep, spec, rows, meta)


def fake_classification_run(sweep: Path, method: str, seed: int, rate: float, scheme: str, skill: float, n: int = 60) -> str:
    """A missing-rate classification run (avmnist_synthetic): one row per test sample, with its realised missing share."""
    rng = np.random.default_rng([seed, int(rate * 100), int(skill * 100)])
    target = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < skill, target, (target + 1) % 3)
    missing = {"scheme": scheme, "eval": "masks" if scheme == "slots" else "subsets", **({"modality": "audio"} if scheme != "slots" else {})}
    subsets = ["image", "audio", "image+audio"] if scheme == "slots" else ["image"]
    spec = {"protocol": "missing_slots" if scheme == "slots" else "audio_rate", "mode": "non_dedicated", "method": method,
            "method_params": {}, "dataset": "avmnist_synthetic", "dataset_params": {"n_test": n}, "train_subset": None,
            "eval_subsets": subsets, "seed": seed, "budget": {"iterations": 4, "batch": 8, "patch": None, "checkpoint_every": 2},
            "budget_name": "smoke", "training": {}, "metric": {"empty": "one", "et_threshold": 500}, "missing": missing,
            "missing_rate": rate}
    condition = "masks" if scheme == "slots" else "image"
    rows = pd.DataFrame({"case_id": [f"s{i}" for i in range(n)], "eval_subset": "image+audio" if scheme == "slots" else "image",
                         "eval_code": 3 if scheme == "slots" else 1, "n_available": 2, "condition": condition, "target": target,
                         "pred": pred, "prob": [np.eye(3)[p] * 0.8 + 0.2 / 3 for p in pred], "metric": "correct",
                         "value": (pred == target) * 1.0})
    share = rate - rate ** 2 / 2 if scheme == "slots" else 1 - rate
    meta = {"missing_share": {"train": round(share, 3), "test": round(share + 0.01, 3)}, "method_params_resolved": {}}
    return write_run(sweep, spec, rows, meta)


# --- a whole benchmark's store ---------------------------------------------------------------------------------

#: The methods of the fabricated benchmark, with a skill each (their Dice ranking).
SEG_METHODS = {"shaspec": 0.62, "mmformer": 0.6, "rfnet": 0.58, "uhved": 0.55, "hemis": 0.52, "smil": 0.5, "mean_fill": 0.45,
               "zero_fill": 0.42}
CLS_METHODS = {"shaspec": 0.9, "smil": 0.88, "hemis": 0.86, "uhved": 0.87, "ul4m4": 0.84, "zero_fill": 0.85}
#: A default-like budget: 1,000 iterations logged every 20.
DEFAULT = {"iterations": 1000, "batch": 2, "patch": [32, 32, 32], "checkpoint_every": 100, "log_every": 20, "overlap": 0.5}
#: BraTS2018 protocol A: the U-HVED split file and its 57 test cases.
SPLIT_A = {"split": "/data/U-HVED/splits/dataset_split_3.csv", "root": "/data/BraTS2018"}


def fabricate(root: Path, seeds: int = 5, cases: int = 10, samples: int = 450) -> list[str]:
    """A benchmark's store under ``root`` (1,000 runs with ``seeds`` = 5): per seed, the non-dedicated protocol (8 methods),
    the dedicated one (8 methods x 15 subsets), ShaSpec's alpha/beta grid (8 points) and DAO ablation (4 losses), BraTS2018
    protocol A (5 methods, 57 test cases; seeds 0-2), audio_rate and missing_slots (6 methods x 4 rates, ``samples`` test
    samples), and timing at two budgets (once); then the runs that did not finish: the dedicated zero_fill of one more seed
    failed (15) and 14 more stopped. Segmentation runs score ``cases`` test cases. Returns the run keys."""
    keys: list[str] = []
    kw = {"budget": DEFAULT, "budget_name": "default", "n_cases": cases}
    case_skill = np.random.default_rng(7).normal(0, 0.08, max(cases, 57))
    for seed in range(seeds):
        for m, skill in SEG_METHODS.items():
            keys.append(fake_run(root / "non_dedicated", m, seed, skill=skill, case_skill=case_skill[:cases], **kw))
            for s in LABELS:
                keys.append(fake_run(root / "dedicated", m, seed, skill=skill + 0.03, protocol="dedicated", mode="dedicated",
                                     train_subset=s, case_skill=case_skill[:cases], **kw))
        for params in ({"alpha": 0}, {"alpha": 0.01}, {}, {"alpha": 1}, {"beta": 0}, {"beta": 0.002}, {"beta": 0.2}, {"beta": 1}):
            skill = 0.6 - 0.05 * abs(np.log10(params.get("alpha", 0.1) + 1e-3) + 1) - 0.03 * (params.get("beta", 0.02) > 0.1)
            keys.append(fake_run(root / "alpha_beta", "shaspec", seed, protocol="alpha_beta", params=params, skill=skill,
                                 case_skill=case_skill[:cases], **kw))
        for dao, skill in (("l1", 0.62), ("kl", 0.6), ("mse", 0.58), ("ce", 0.55)):
            keys.append(fake_run(root / "dao_loss", "shaspec", seed, protocol="dao_loss", params={} if dao == "l1" else {"dao": dao},
                                 skill=skill, case_skill=case_skill[:cases], **kw))
        if seed < 3:
            for m in ("shaspec", "mmformer", "rfnet", "uhved", "hemis"):
                keys.append(fake_run(root / "brats2018_a", m, seed, protocol="brats2018_a", dataset="brats2018",
                                     dataset_params=SPLIT_A, skill=SEG_METHODS[m] + 0.1, case_skill=case_skill[:57],
                                     **{**kw, "n_cases": 57}))
        for m, skill in CLS_METHODS.items():
            for rate in (0.05, 0.1, 0.15, 0.2):
                keys.append(fake_classification_run(root / "audio_rate", m, seed, rate, "modality_rate", skill - rate / 4, samples))
                keys.append(fake_classification_run(root / "missing_slots", m, seed, round(rate * 3.5, 3), "slots", skill - rate, samples))
    for i, m in enumerate(SEG_METHODS):
        keys.append(fake_timing_run(root / "timing", m, 1, 32, "default", 0.05 + 0.02 * i))
        keys.append(fake_timing_run(root / "timing", m, 1, 80, "paper", 0.4 + 0.1 * i, memory_kind="peak_cuda_allocated_mib"))
    for s in LABELS:
        keys.append(fake_run(root / "dedicated", "zero_fill", seeds, protocol="dedicated", mode="dedicated", train_subset=s,
                             state=State.FAILED, failure="FloatingPointError: zero_fill: loss is nan at iteration 20", **kw))
    for m in list(SEG_METHODS)[:6]:
        keys.append(fake_run(root / "non_dedicated", m, seeds, state=State.STOPPED, **kw))
    for params in ({"alpha": 0}, {"alpha": 1}, {"beta": 0}, {"beta": 1}):
        keys.append(fake_run(root / "alpha_beta", "shaspec", seeds, protocol="alpha_beta", params=params, state=State.STOPPED, **kw))
    for dao in ("kl", "mse", "ce", "l1"):
        keys.append(fake_run(root / "dao_loss", "shaspec", seeds, protocol="dao_loss", params={} if dao == "l1" else {"dao": dao},
                             state=State.STOPPED, **kw))
    return keys
