"""Reading the results store: every run folder under a folder (its spec, meta.json and state) and the
rows of the finished ones. The report's only reader of the store; nothing here imports torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from missbench.store.run_folder import DONE, FAILED, META, REDO, SPEC, RunFolder, unreadable

#: How deep below the given folder run folders are looked for (results/ -> sweep -> run).
MAX_DEPTH = 3
#: Spec fields that rows.parquet repeats in a column: they complete a partial spec (old meta.json files).
ROW_IDENTITY = {"protocol": "protocol", "dataset": "dataset", "budget_name": "budget", "mode": "mode",
                "method": "method", "seed": "seed"}


@dataclass(frozen=True)
class Run:
    """One run as the report sees it: its spec (empty when unknown), meta.json (finished runs) and state.

    ``state`` is done, failed (FAILED holds the error), corrupt (DONE, but its results were damaged),
    stopped (a folder without DONE: killed, cancelled or unfinished) or a live state the caller knows
    better (pending, running); ``detail`` says why a run that is not done has no result.
    """

    run_id: str
    folder: Path | None
    state: str
    detail: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.state == "done"

    @property
    def why(self) -> str:
        """'state: detail', the reason a run is left out of every table."""
        return f"{self.state}: {self.detail}" if self.detail else self.state


@dataclass
class Store:
    """Every run found (by run id, sorted) and the rows of the finished ones, concatenated."""

    runs: dict[str, Run]
    rows: pd.DataFrame

    def done(self) -> list[Run]:
        return [r for r in self.runs.values() if r.done]

    def resolved_params(self, run_id: str) -> dict[str, Any]:
        """A run's full method parameters: meta.json's resolved record when present, else its overrides."""
        run = self.runs[run_id]
        return dict(run.meta.get("method_params_resolved") or run.spec.get("method_params", {}))


def find_run_folders(root: Path) -> list[Path]:
    """Folders at ``root`` or up to MAX_DEPTH levels below that hold a spec, meta.json, DONE or FAILED."""
    found: list[Path] = []

    def walk(p: Path, depth: int) -> None:
        if any((p / name).exists() for name in (SPEC, META, DONE, FAILED)):
            found.append(p)
            return
        if depth < MAX_DEPTH:
            for child in sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")):
                walk(child, depth + 1)

    walk(root, 0)
    return sorted(found)


def read_run(folder: Path, live: tuple[str, str] | None = None) -> tuple[Run, pd.DataFrame | None]:
    """One run folder and, when it finished intact, its rows. ``live``: (state, detail) from whoever knows
    the job (a sweep's queue), used for a run that is not done. Results that do not read make the run corrupt."""
    run = RunFolder(folder)
    if not folder.exists():
        return Run(folder.name, None, *(live or ("pending", "no run folder yet"))), None
    try:
        spec = run.spec_dict() if run.has_spec() else {}
    except (OSError, ValueError) as e:
        raise ValueError(f"run folder {folder}: cannot read its spec ({e})") from None
    state, problem = run.state(), None
    if state == "done":
        try:
            meta, rows = run.meta(), run.rows()
        except (OSError, ValueError) as e:  # damaged after the check: as corrupt as a checksum mismatch
            state, problem = "corrupt", unreadable(e)
    if state != "done":
        if state == "failed":
            failure = run.failure()
            why = ("failed", f"{failure['error']}: {failure['message']}".lstrip(": "))
        elif state == "corrupt":
            why = ("corrupt", f"{problem or run.problem()}; {REDO}")
        else:
            why = ("stopped", "a run folder without DONE: killed, cancelled or unfinished; a rerun resumes it")
        return Run(folder.name, folder, *(live or why), spec=spec), None
    spec = {**meta.get("spec", {}), **spec}
    for key, column in ROW_IDENTITY.items():
        if key not in spec and column in rows and len(rows):
            value = rows[column].iloc[0]
            spec[key] = value.item() if hasattr(value, "item") else value
    return Run(folder.name, folder, "done", spec=spec, meta=meta), rows


def load_store(root: Path, run_ids: list[str] | None = None, live: dict[str, tuple[str, str]] | None = None) -> Store:
    """Every run folder under ``root`` (or the folders ``root/<run_id>`` of ``run_ids``), their states and
    the finished runs' rows. ``live``: run id -> (state, detail) for runs whose job a sweep knows about.
    A run id found twice is an error: its results would count twice."""
    folders = find_run_folders(root) if run_ids is None else [root / r for r in run_ids]
    runs: dict[str, Run] = {}
    frames = []
    for folder in folders:
        if folder.name in runs:
            raise ValueError(f"run {folder.name} appears twice: {runs[folder.name].folder} and {folder}")
        run, rows = read_run(folder, (live or {}).get(folder.name))
        runs[run.run_id] = run
        if rows is not None:
            frames.append(rows)
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return Store(dict(sorted(runs.items())), rows)
