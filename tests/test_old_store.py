"""A store written before models and scores were separate stays readable (issue: models and scores).

tests/data/store_v0 was written by the release before that change (commit d8294ea): two zero_fill smoke
runs and one failed run of the non-dedicated protocol, one audio_rate run. The current code reads each
run as a model with one score (results version 0, its code the plugin hashes its meta recorded), lists
it in status, collect and the tables, never pools it with current runs, and rewrites none of its files;
a legacy model is scored again by the current code when its method file is the one it was trained with.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd

from conftest import CHECKOUT
from missbench.cli import main
from missbench.report import load_store
from missbench.store.run_folder import ModelFolder, sweep_models

STORE = CHECKOUT / "tests" / "data" / "store_v0" / "results"
SEG = "non_dedicated_brats_synthetic_smoke"


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_old_store_reads_as_models_with_one_score_each_and_nothing_is_rewritten(tmp_path, capsys):
    store = tmp_path / "results"
    shutil.copytree(STORE, store)
    before = snapshot(store)
    loaded = load_store(store)
    assert len(loaded.done()) == 3 and len(loaded.runs) == 4  # and the run that failed before it wrote a spec
    assert {r.spec["code"]["version"] for r in loaded.done()} == {0} and all(r.spec["eval"]["code"]["version"] == 0 for r in loaded.done())
    assert all(r.run_id == r.folder.name for r in loaded.done())  # a legacy run is its own score
    assert set(loaded.rows.run_id) == {r.run_id for r in loaded.done()}
    models = sweep_models(store / SEG)
    assert [m.legacy for m in models if m.has_spec()] == [True, True] and all(len(m.scores()) == 1 for m in models if m.has_spec())
    assert main(["status", str(store / SEG)]) == 1  # the failed run
    assert "3 models: 2 done, 1 failed" in capsys.readouterr().out
    assert main(["status", str(store / "audio_rate_avmnist_synthetic_smoke")]) == 0
    from analysis.make_tables import main as make_tables

    assert make_tables([str(store), "--out", str(tmp_path / "tables"), "--no-figures"]) == 0
    assert (tmp_path / "tables" / f"dice_{SEG}_version-0.csv").exists() or any((tmp_path / "tables").glob(f"dice_{SEG}*.csv"))
    assert snapshot(store) == before


def test_a_legacy_model_is_scored_again_without_training(tmp_path, capsys):
    store = tmp_path / "results"
    shutil.copytree(STORE, store)
    before = snapshot(store)
    legacy = [m for m in sweep_models(store / SEG) if m.has_spec()]
    recorded = legacy[0].meta()["plugin_files"]["methods/zero_fill.py"]
    current = hashlib.sha256((CHECKOUT / "methods" / "zero_fill.py").read_bytes()).hexdigest()
    status = main(["evaluate", str(store / SEG), "--no-progress", "--threads", "1"])
    if recorded != current:  # methods/zero_fill.py changed since the store was written: refused, nothing written
        assert status == 2 and "is not the code of model" in capsys.readouterr().err and snapshot(store) == before
        return
    assert status == 0 and "nothing was trained" in capsys.readouterr().out
    after = snapshot(store)
    logs = [k for k in before if k.endswith("log.txt")]
    results = [k for k in before if Path(k).name in ("spec.json", "rows.parquet", "meta.json", "DONE", "FAILED", "checkpoint.pt")]
    assert {k: after[k] for k in results} == {k: before[k] for k in results}  # every result as it was; new scores beside
    assert all((store / k).read_bytes().startswith((STORE / k).read_bytes()) for k in logs)  # logs appended to
    for model in legacy:
        old, new = model.scores()
        assert old.legacy and not new.legacy and new.spec().code["version"] == 1
        keys = ["case_id", "eval_subset", "region", "metric"]
        merged = pd.merge(old.rows()[keys + ["value"]], new.rows()[keys + ["value"]], on=keys, suffixes=("_old", "_new"))
        assert len(merged) == len(old.rows()) and (merged.value_old.fillna(-1) == merged.value_new.fillna(-1)).all()
    assert not any((m.path / "FAILED").exists() for m in legacy) and ModelFolder(legacy[0].path).legacy
