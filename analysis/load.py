"""Reading the results store for analysis: rows, meta.json and run folders of every finished run."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from missbench.store.run_folder import DONE
from missbench.core.subsets import Subset, all_subsets

#: How deep below the given folder run folders are looked for (results/ -> sweep -> run).
MAX_DEPTH = 3


@dataclass
class Store:
    """Every finished run under a folder: its rows (concatenated), meta.json and folder, by run id."""

    rows: pd.DataFrame
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    dirs: dict[str, Path] = field(default_factory=dict)


def find_runs(root: Path) -> list[Path]:
    """Run folders (those holding DONE) at ``root`` or up to MAX_DEPTH levels below, sorted by path."""
    found: list[Path] = []

    def walk(p: Path, depth: int) -> None:
        if (p / DONE).exists():
            found.append(p)
            return
        if depth < MAX_DEPTH:
            for child in sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")):
                walk(child, depth + 1)

    walk(root, 0)
    return sorted(found)


def load_store(root: Path) -> Store:
    """Rows, meta and folders of the finished runs under ``root``; a run id seen twice is an error."""
    frames, meta, dirs = [], {}, {}
    for d in find_runs(root):
        rows_path, meta_path = d / "rows.parquet", d / "meta.json"
        try:
            frame = pd.read_parquet(rows_path)
            info = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"run folder {d}: cannot read rows.parquet/meta.json ({e})") from None
        run_id = str(frame.run_id.iloc[0]) if len(frame) else info.get("run_id", d.name)
        if run_id in dirs:
            raise ValueError(f"run {run_id} appears twice: {dirs[run_id]} and {d}")
        frames.append(frame)
        meta[run_id], dirs[run_id] = info, d
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return Store(rows, meta, dirs)


def modality_order(labels: list[str], codes: list[int]) -> tuple[str, ...]:
    """The data set's modality order, recovered from subset labels and their bit codes."""
    position: dict[str, int] = {}
    for label, code in zip(labels, codes):
        bits = [i for i in range(code.bit_length()) if code >> i & 1]
        for name, bit in zip(label.split("+"), bits):
            position[name] = bit
    return tuple(sorted(position, key=position.__getitem__))


def canonical_subsets(rows: pd.DataFrame) -> list[Subset]:
    """The evaluation subsets present in ``rows``, in the canonical order of missbench.core.subsets."""
    pairs = rows[["eval_subset", "eval_code"]].drop_duplicates()
    mods = modality_order(list(pairs.eval_subset), [int(c) for c in pairs.eval_code])
    present = set(pairs.eval_subset)
    return [s for s in all_subsets(mods) if s.label in present]


def resolved_params(store: Store, run_id: str) -> dict[str, Any]:
    """A run's full method parameters: meta.json's resolved record when present, else its overrides only."""
    info = store.meta.get(run_id, {})
    return dict(info.get("method_params_resolved") or info.get("spec", {}).get("method_params", {}))


def natural_key(text: str) -> tuple:
    """Sort key that orders numbers inside labels numerically (alpha=0.01 before alpha=0.1 before alpha=1)."""
    parts = re.split(r"(-?\d+(?:\.\d+)?(?:e-?\d+)?)", text)
    return tuple((0, float(p)) if i % 2 else (1, p) for i, p in enumerate(parts) if p != "")
