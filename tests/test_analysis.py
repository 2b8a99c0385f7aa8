"""analysis/make_tables.py on fabricated stores (fast) and on one real smoke run: the 15-row layout,
bold = true best, Avg = mean of the rows, skips with a message, byte-identical reruns, run ids recorded."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.make_tables import main  # noqa: E402
from missbench.store.run_folder import DONE  # noqa: E402
from missbench.core.subsets import all_subsets  # noqa: E402

MODS = ("FLAIR", "T1", "T1c", "T2")
LABELS = [s.label for s in all_subsets(MODS)]


def fake_run(sweep: Path, method: str, seed: int, protocol: str = "non_dedicated", mode: str = "non_dedicated",
             params: dict | None = None, train_subset: str | None = None, n_cases: int = 20, skill: float = 0.5) -> str:
    """A finished run folder with rows (Dice, HD95 per case, subset, region) drawn around ``skill``."""
    params = params or {}
    variant = method + (f"[{','.join(f'{k}={v}' for k, v in sorted(params.items()))}]" if params else "")
    run_id = f"{variant}_{protocol}_{train_subset or 'random'}_seed{seed}".replace("[", "-").replace("]", "").replace("=", "").replace("+", "-")
    rng = np.random.default_rng([seed, len(run_id), int(skill * 1000)])
    subsets = [s for s in all_subsets(MODS) if train_subset is None or s.label == train_subset]
    rows = []
    for s in subsets:
        for c in range(n_cases):
            for region in ("ET", "ETpp", "TC", "WT"):
                dice = float(np.clip(skill + 0.05 * len(s) + 0.05 * rng.standard_normal(), 0, 1))
                rows += [{"case_id": f"case{c:02d}", "eval_subset": s.label, "eval_code": s.code, "n_available": len(s),
                          "region": region, "metric": m, "value": v, "ref_voxels": 100, "pred_voxels": 90}
                         for m, v in (("dice", dice), ("hd95", 20 * (1 - dice)))]
    frame = pd.DataFrame(rows)
    for key, value in {"run_id": run_id, "method": method, "variant": variant, "dataset": "brats_synthetic", "protocol": protocol,
                       "mode": mode, "budget": "smoke", "train_subset": train_subset or "random", "seed": seed, "split": "test",
                       "empty_policy": "one", "et_threshold": 50}.items():
        frame[key] = value
    d = sweep / run_id
    d.mkdir(parents=True)
    frame.to_parquet(d / "rows.parquet", index=False)
    resolved = {"alpha": 0.1, "beta": 0.02, "dao": "l1", **params} if method == "shaspec" else params
    meta = {"run_id": run_id, "spec": {"method": method, "method_params": params, "mode": mode,
                                         "budget": {"iterations": 4, "batch": 1, "patch": [16, 16, 16]}},
            "parameters": 1000, "method_params_resolved": resolved, "memory": {"peak_process_rss_mib": 500.0},
            "timings": {"train_seconds_per_iteration": 0.1, "eval_seconds_per_case": 0.2}, "device": "cpu", "device_name": "x86_64"}
    (d / "meta.json").write_text(json.dumps(meta))
    (d / DONE).write_text("")
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Three methods x two seeds (non-dedicated; shaspec clearly best), dedicated runs on two subsets, a DAO sweep."""
    root = tmp_path_factory.mktemp("store")
    for seed in (0, 1):
        for method, skill in (("shaspec", 0.7), ("zero_fill", 0.3), ("mean_fill", 0.35)):
            fake_run(root / "nd", method, seed, skill=skill)
            for subset in ("T1", "FLAIR+T1+T1c+T2"):
                fake_run(root / "ded", method, seed, "dedicated", "dedicated", train_subset=subset, skill=skill + 0.05)
        for dao, skill in (("l1", 0.7), ("kl", 0.5), ("mse", 0.4), ("ce", 0.3)):
            fake_run(root / "dao", "shaspec", seed, "dao_loss", params={} if dao == "l1" else {"dao": dao}, n_cases=4, skill=skill)
    return root


def md_table(path: Path) -> list[list[str]]:
    """The cells of the Markdown table in ``path`` (rows after the header and separator)."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


@pytest.fixture(scope="module")
def tables(store, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("tables")
    proc = subprocess.run([sys.executable, "analysis/make_tables.py", str(store), "--out", str(out), "--no-figures"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return out, proc.stdout


def test_dice_table_has_15_rows_in_canonical_order_and_avg_is_their_mean(tables):
    out, _ = tables
    table = pd.read_csv(out / "dice_non_dedicated_brats_synthetic_smoke.csv", header=[0, 1], index_col=0)
    assert list(table.index) == [*LABELS, "Avg"]
    assert list(dict.fromkeys(table.columns.get_level_values(0))) == ["ET", "TC", "WT"]
    assert list(table["ET"].columns) == ["mean_fill", "shaspec", "zero_fill"]
    np.testing.assert_allclose(table.loc["Avg"].to_numpy(), table.iloc[:15].mean().to_numpy(), atol=1e-3)
    rows = md_table(out / "dice_non_dedicated_brats_synthetic_smoke.md")
    assert [r[:4] for r in rows[:2]] == [["●", "○", "○", "○"], ["○", "●", "○", "○"]]
    assert rows[15][0] == "Avg" and rows[16][0] == "95% CI"


def test_bold_cell_is_the_true_best_of_its_row_and_region(tables):
    out, _ = tables
    for metric, best in (("dice", max), ("hd95", min)):
        table = pd.read_csv(out / f"{metric}_non_dedicated_brats_synthetic_smoke.csv", header=[0, 1], index_col=0)
        rows = md_table(out / f"{metric}_non_dedicated_brats_synthetic_smoke.md")
        for i, key in enumerate(table.index):
            cells = rows[i][4:]
            for r, region in enumerate(("ET", "TC", "WT")):
                values = table.loc[key, region]
                bold = [c.startswith("**") for c in cells[3 * r:3 * r + 3]]
                assert bold == [v == best(values) for v in values], (metric, key, region)


def test_cells_show_mean_and_std_over_seeds_and_significance_marks(tables):
    out, _ = tables
    text = (out / "dice_non_dedicated_brats_synthetic_smoke.md").read_text()
    assert "± " in text and "over 2 seeds" in text and "Holm" in text
    tests = pd.read_csv(out / "dice_non_dedicated_brats_synthetic_smoke.tests.csv")
    assert len(tests) == 15 * 3 * 3
    shaspec = tests[tests.variant == "shaspec"]
    assert (shaspec.other == "mean_fill").all() and (shaspec.p_holm < 0.05).all()  # 20 cases, clearly better
    assert text.count("†") >= 45


def test_latex_is_booktabs_with_circles_and_every_file_names_its_runs(tables, store):
    out, _ = tables
    tex = (out / "dice_non_dedicated_brats_synthetic_smoke.tex").read_text()
    assert all(k in tex for k in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){5-7}", r"$\bullet$", r"$\circ$"))
    runs = sorted(p.name for p in (store / "nd").iterdir())
    assert (out / "dice_non_dedicated_brats_synthetic_smoke.runs.txt").read_text().split() == runs
    assert tex.startswith("% runs: " + " ".join(runs))


def test_gap_and_dao_tables(tables):
    out, _ = tables
    gap = pd.read_csv(out / "gap_dedicated_brats_synthetic_smoke.csv", header=[0, 1], index_col=0)
    assert list(gap.index[:3]) == ["T1 dedicated", "T1 non-dedicated", "T1 gap"]
    np.testing.assert_allclose(gap.loc["T1 gap"], gap.loc["T1 dedicated"] - gap.loc["T1 non-dedicated"], atol=1e-3)
    dao = pd.read_csv(out / "dao_dao_loss_brats_synthetic_smoke.csv", header=[0, 1], index_col=0)
    assert list(dao.columns.get_level_values(1)) == ["ce", "kl", "l1", "mse"]
    assert list(dao.index) == ["T1 ET", "T1 TC", "T1 WT", "Avg ET", "Avg TC", "Avg WT"]
    assert (dao.idxmax(axis=1).str[1] == "l1").all()  # the fabricated best


def test_missing_inputs_skip_with_a_message_and_the_rest_is_written(tables):
    out, stdout = tables
    assert "timing: skipped (no timing runs" in stdout
    assert (out / "run_costs.md").exists() and (out / "gap_dedicated_brats_synthetic_smoke.tex").exists()


def test_rerun_is_byte_identical(tmp_path, capsys):
    for method, skill in (("shaspec", 0.7), ("zero_fill", 0.3), ("mean_fill", 0.35)):
        fake_run(tmp_path / "nd", method, 0, n_cases=4, skill=skill)
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert main([str(tmp_path / "nd"), "--out", str(out)]) == 0
    assert "shared/specific features: skipped (no run folder has features.npz" in capsys.readouterr().out
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    assert {f"fig_{k}_non_dedicated_brats_synthetic_smoke.{e}" for k in ("heatmap", "cases", "ranks") for e in ("pdf", "png")} <= set(files)
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_alpha_beta_curves_place_the_default_point_from_resolved_parameters(tmp_path):
    from analysis import figures
    from analysis.load import load_store

    sweep = tmp_path / "ab"
    for seed in (0, 1):
        for params in ({"alpha": 0}, {"alpha": 0.01}, {}, {"alpha": 1}, {"beta": 0}, {"beta": 0.2}):
            fake_run(sweep, "shaspec", seed, "alpha_beta", params=params, n_cases=3)
    store = load_store(sweep)
    paths = figures.sweep_curves(store.rows, store, tmp_path / "fig" / "ab")
    assert [p.suffix for p in paths] == [".pdf", ".png", ".txt"]
    assert paths[2].read_text().split() == sorted(store.meta)  # both panels' runs: the default point is shared


def test_classification_table_per_missing_rate(tmp_path):
    rng = np.random.default_rng(0)
    for method, skill in (("smil", 0.9), ("zero_fill", 0.6)):
        for seed in (0, 1):
            target = rng.integers(0, 3, 60)
            pred = np.where(rng.random(60) < skill, target, (target + 1) % 3)
            prob = [np.eye(3)[p] * 0.8 + 0.2 / 3 for p in pred]
            frame = pd.DataFrame({"case_id": [f"s{i}" for i in range(60)], "eval_subset": "image", "eval_code": 1, "n_available": 1,
                                  "target": target, "pred": pred, "prob": prob, "metric": "correct", "value": (pred == target) * 1.0,
                                  "missing_rate": np.repeat([0.2, 0.5], 30)})
            run_id = f"{method}_seed{seed}"
            for key, value in {"run_id": run_id, "method": method, "variant": method, "dataset": "avmnist", "protocol": "cls",
                               "mode": "non_dedicated", "budget": "smoke", "train_subset": "random", "seed": seed, "split": "test"}.items():
                frame[key] = value
            d = tmp_path / "s" / run_id
            d.mkdir(parents=True)
            frame.to_parquet(d / "rows.parquet", index=False)
            (d / "meta.json").write_text(json.dumps({"run_id": run_id, "spec": {}}))
            (d / DONE).write_text("")
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "t"), "--no-figures"]) == 0
    table = pd.read_csv(tmp_path / "t" / "classification_cls_avmnist_smoke.csv", header=[0, 1], index_col=0)
    assert list(table.index) == [0.2, 0.5]
    assert list(dict.fromkeys(table.columns.get_level_values(0))) == ["Accuracy (%)", "F1-micro (%)", "AUC (%)"]
    rows = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "s").rglob("rows.parquet")))
    acc = rows[rows.method == "smil"].groupby(["seed", "missing_rate"]).value.mean().groupby("missing_rate").mean() * 100
    assert table[("Accuracy (%)", "smil")].to_numpy() == pytest.approx(acc.to_numpy(), abs=1e-3)


def test_bad_results_folder_is_an_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 1


def test_real_shaspec_smoke_run_writes_features_and_the_feature_figure(tmp_path):
    from missbench.cli import main as bench

    assert bench(["--protocol", "non_dedicated", "--budget", "smoke", "--methods", "shaspec", "--no-progress", "--threads", "1",
                  "--out", str(tmp_path / "s")]) == 0
    run_dir = next(p for p in (tmp_path / "s").iterdir() if p.is_dir())
    with np.load(run_dir / "features.npz") as z:
        assert z["shared"].shape[:2] == z["specific"].shape[:2] == (2, 4)  # test cases x modalities
        assert list(z["modalities"]) == list(MODS)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["method_params_resolved"]["dao"] == "l1"
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "fig_features.png").exists()
    assert re.search(r"shaspec_random_seed0_\w+", (tmp_path / "t" / "fig_features.runs.txt").read_text())
