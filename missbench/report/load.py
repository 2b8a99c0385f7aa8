"""Reading the results store: every model folder under a folder, each score of it (asked or made) as one
`Run` of the tables, and the rows of the finished ones. The report's only reader of the store; nothing
here imports torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from missbench.experiment.spec import report_spec
from missbench.store.run_folder import REDO, ModelFolder, ScoreFolder, find_models, unreadable
from missbench.store.state import State


@dataclass(frozen=True)
class Run:
    """One score of a model as the report sees it: its key (``<model id>/<score id>``; a legacy run's own id; a
    model without scores by its id), its spec (`missbench.experiment.spec.report_spec`; empty when unknown),
    meta (the model's and the score's, merged) and state.

    ``state`` is done, failed (a FAILED holds the error), corrupt (DONE, but results were damaged), stopped
    (no DONE: killed, cancelled, unfinished, or asked and not made yet) or a live state the caller knows
    better (pending, running); ``detail`` says why a run that is not done has no result.
    """

    run_id: str
    folder: Path | None
    state: State
    detail: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    @property
    def why(self) -> str:
        """'state: detail', the reason a run is left out of every table."""
        return f"{self.state}: {self.detail}" if self.detail else self.state


@dataclass
class Store:
    """Every score found (by key, sorted) and the rows of the finished ones, concatenated."""

    runs: dict[str, Run]
    rows: pd.DataFrame

    def done(self) -> list[Run]:
        return [r for r in self.runs.values() if r.done]

    def resolved_params(self, run_id: str) -> dict[str, Any]:
        """A run's full method parameters: meta.json's resolved record when present, else its overrides."""
        run = self.runs[run_id]
        return dict(run.meta.get("method_params_resolved") or run.spec.get("method_params", {}))


def merged_meta(model: dict[str, Any], score: dict[str, Any]) -> dict[str, Any]:
    """A score's meta over its model's, their timings side by side and each memory measure's larger peak."""
    memory = dict(model.get("memory", {}))
    for kind, mib in score.get("memory", {}).items():
        memory[kind] = max(mib, memory.get(kind, mib))
    return {**model, **score, "timings": {**model.get("timings", {}), **score.get("timings", {})}, "memory": memory}


def _failed(artefact: ModelFolder | ScoreFolder) -> str:
    failure = artefact.failure()
    return f"{failure['error']}: {failure['message']}".lstrip(": ")


def read_model(folder: Path, live: tuple[str, str] | None = None) -> list[tuple[Run, pd.DataFrame | None]]:
    """The runs of one model folder (one per score asked or made; the model itself when it has none) and, for the
    finished ones, their rows. ``live``: (state, detail) from whoever knows the job (a sweep's queue), used for
    runs that are not done. Results that do not read make a run corrupt."""
    model = ModelFolder(folder)
    if not folder.exists():
        return [(Run(folder.name, None, *(live or (State.PENDING, "no model folder yet"))), None)]
    try:
        model_spec = model.spec_dict() if model.has_spec() else {}
    except (OSError, ValueError) as e:
        raise ValueError(f"model folder {folder}: cannot read its spec ({e})") from None
    request = model.request()
    labels = request.get("labels", {})
    state = model.state()
    model_meta: dict[str, Any] = {}
    if state is State.DONE:
        try:
            model_meta = model.meta()
        except (OSError, ValueError):  # damaged after the check: as corrupt as a checksum mismatch
            state = State.CORRUPT
    if state is not State.DONE:
        why = {State.FAILED: lambda: (State.FAILED, _failed(model)),
               State.CORRUPT: lambda: (State.CORRUPT, f"its model: {model.problem()}; {REDO}")}.get(
            state, lambda: (State.STOPPED, "a model without DONE: killed, cancelled or unfinished; a rerun resumes it"))()
        why = live or why
    scores = {s.score_id: s for s in model.scores()}
    asked = request.get("scores", {})
    out: list[tuple[Run, pd.DataFrame | None]] = []
    for score_id in sorted(set(scores) | set(asked), key=lambda i: (i != "legacy", i)):
        target = scores.get(score_id) or model.score(score_id)
        try:
            score_spec = target.spec_dict() if target.has_spec() else asked.get(score_id, {})
        except (OSError, ValueError) as e:
            raise ValueError(f"score folder {target.path}: cannot read its spec ({e})") from None
        spec = report_spec(model_spec, score_spec, labels) if model_spec and score_spec else {}
        if state is not State.DONE:
            out.append((Run(target.run_id, target.path, *why, spec=spec), None))
            continue
        score_state, problem = target.state(), None
        if score_state is State.DONE:
            try:
                score_meta, rows = target.meta(), target.rows()
            except (OSError, ValueError) as e:
                score_state, problem = State.CORRUPT, unreadable(e)
        if score_state is not State.DONE:
            detail = {State.FAILED: lambda: f"scoring failed: {_failed(target)}",
                      State.CORRUPT: lambda: f"{problem or target.problem()}; {REDO}"}.get(
                score_state, lambda: "asked and not scored yet (the model is trained; a rerun scores it)")()
            run_state = score_state if score_state in (State.FAILED, State.CORRUPT) else State.STOPPED
            out.append((Run(target.run_id, target.path, *(live or (run_state, detail)), spec=spec), None))
            continue
        out.append((Run(target.run_id, target.path, State.DONE, spec=spec, meta=merged_meta(model_meta, score_meta)), rows))
    if not out:  # a model with no score asked or made: left out of every table by its own state
        detail = why if state is not State.DONE else (State.STOPPED, "no score asked or made")
        out.append((Run(model.model_id, folder, *detail, spec=report_spec(model_spec, {}, labels) if model_spec else {}), None))
    return out


def load_store(root: Path, run_ids: list[str] | None = None, live: dict[str, tuple[str, str]] | None = None) -> Store:
    """Every score of every model folder under ``root`` (or only the runs ``run_ids``, keys ``<model id>/<score id>``
    below ``root``), their states and the finished ones' rows. ``live``: model id -> (state, detail) for models
    whose job a sweep knows about. A score found in two places (a model linked into two sweeps) counts once
    where both carry the same labels, and once per table where they differ."""
    if run_ids is None:
        folders = find_models(root)
    else:
        folders = sorted({root / key.split("/", 1)[0] for key in run_ids})
    wanted = set(run_ids) if run_ids is not None else None
    runs: dict[str, Run] = {}
    frames = []
    for folder in folders:
        for run, rows in read_model(folder, (live or {}).get(folder.name)):
            if wanted is not None and run.run_id not in wanted and folder.name not in wanted:
                continue
            key = run.run_id
            if key in runs:
                if runs[key].spec == run.spec or not run.spec:
                    continue  # the same score, linked: counted once
                key = f"{key}@{folder.parent.name}"
                run = Run(key, run.folder, run.state, run.detail, run.spec, run.meta)
                if rows is not None:
                    rows = rows.assign(run_id=key)
            runs[key] = run
            if rows is not None:
                frames.append(rows)
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return Store(dict(sorted(runs.items())), rows)
