"""The results store: results/<sweep>/<run_id>/ with spec.json, rows.parquet, meta.json, log.txt, checkpoint.pt, DONE.

Every file is written to a temporary name and renamed, so a kill never leaves a half-written result,
and DONE is written last.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

#: Markers of a run folder: DONE is written last by a finished run, FAILED (the traceback) by a failed one.
DONE = "DONE"
FAILED = "FAILED"


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_rows(path: Path, rows: pd.DataFrame) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    rows.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def is_done(run_dir: Path) -> bool:
    return (run_dir / DONE).exists()


def load_rows(sweep_dir: Path, run_ids: list[str] | None = None) -> pd.DataFrame:
    """Rows of the finished runs in ``sweep_dir`` (only ``run_ids`` if given)."""
    dirs = [sweep_dir / r for r in run_ids] if run_ids is not None else sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    frames = [pd.read_parquet(d / "rows.parquet") for d in dirs if is_done(d)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
