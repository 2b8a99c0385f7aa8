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
from report_store import LABELS, MODS, fake_classification_run, fake_run  # noqa: E402
from missbench.store.run_folder import FEATURES, ModelFolder, sweep_models  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Three methods x two seeds (non-dedicated; shaspec clearly best), dedicated runs on two subsets, a DAO sweep."""
    root = tmp_path_factory.mktemp("store")
    for seed in (0, 1):
        for method, skill in (("shaspec", 0.7), ("zero_fill", 0.3), ("mean_fill", 0.35)):
            fake_run(root / "nd", method, seed, skill=skill)
            for subset in ("T1", "FLAIR+T1+T1c+T2"):
                fake_run(root / "ded", method, seed, protocol="dedicated", mode="dedicated", train_subset=subset, skill=skill + 0.05)
        for dao, skill in (("l1", 0.7), ("kl", 0.5), ("mse", 0.4), ("ce", 0.3)):
            fake_run(root / "dao", "shaspec", seed, protocol="dao_loss", params={} if dao == "l1" else {"dao": dao}, n_cases=4, skill=skill)
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


def test_bold_cell_is_the_best_displayed_value_of_its_row_and_region(tables):
    out, _ = tables
    for metric, best in (("dice", max), ("hd95", min)):
        table = pd.read_csv(out / f"{metric}_non_dedicated_brats_synthetic_smoke.csv", header=[0, 1], index_col=0)
        rows = md_table(out / f"{metric}_non_dedicated_brats_synthetic_smoke.md")
        for i, key in enumerate(table.index):
            cells = rows[i][4:]
            for r, region in enumerate(("ET", "TC", "WT")):
                shown = table.loc[key, region].round(2)
                bold = [c.startswith("**") for c in cells[3 * r:3 * r + 3]]
                assert bold == [v == best(shown) for v in shown], (metric, key, region)


def test_cells_show_mean_and_std_over_seeds_and_significance_marks(tables):
    out, _ = tables
    text = (out / "dice_non_dedicated_brats_synthetic_smoke.md").read_text()
    assert "± " in text and "Every cell pools 2 seeds × 20 cases" in text and "Holm-corrected over the 90 distinct tests" in text
    tests = pd.read_csv(out / "dice_non_dedicated_brats_synthetic_smoke.tests.csv")
    assert len(tests) == 15 * 3 * 2  # each method against the best (shaspec), once per pair
    assert not tests.duplicated(["eval_subset", "region", "variant"]).any()
    assert (tests.best == "shaspec").all() and set(tests.variant) == {"mean_fill", "zero_fill"}
    assert (tests[tests.runner_up].variant == "mean_fill").all() and (tests.p_holm < 0.05).all()  # 20 cases, clearly better
    assert text.count("†") >= 3 * 45  # every method differs from the best, and the best from the runner-up


def test_latex_is_booktabs_with_circles_and_every_file_names_its_runs(tables, store):
    out, _ = tables
    tex = (out / "dice_non_dedicated_brats_synthetic_smoke.tex").read_text()
    assert all(k in tex for k in (r"\toprule", r"\midrule", r"\bottomrule", r"$\bullet$", r"$\circ$"))
    # wider than a page: by default ET, TC and WT become three floats, each as wide as it needs (a column here)
    assert tex.count(r"\caption{") == 3 and r"\label{tab:dice_non_dedicated_brats_synthetic_smoke}" in tex
    runs = sorted(s.run_id for m in sweep_models(store / "nd") for s in m.scores())
    assert (out / "dice_non_dedicated_brats_synthetic_smoke.runs.txt").read_text().split() == runs
    assert tex.startswith("% runs: " + " ".join(runs))
    # the float says how many runs and where their ids are; the ids themselves stay out of it
    assert "Runs: 6 used (ids in dice" in tex.replace("\\_\\allowbreak{}", "_") and runs[0] not in tex.split("\n", 1)[1]
    assert "Runs used: 6" in (out / "dice_non_dedicated_brats_synthetic_smoke.md").read_text()


def test_gap_and_dao_tables(tables):
    out, _ = tables
    gap = pd.read_csv(out / "gap_dedicated_brats_synthetic_smoke.csv", header=[0, 1], index_col=0)
    assert list(gap.index) == ["T1", "FLAIR+T1+T1c+T2", "Avg"]
    for region in ("ET", "TC", "WT"):
        for m in ("mean_fill", "shaspec", "zero_fill"):
            np.testing.assert_allclose(gap[(region, f"{m} gap")], gap[(region, f"{m} ded.")] - gap[(region, f"{m} non-ded.")], atol=1e-3)
    nd = pd.read_csv(out / "dice_non_dedicated_brats_synthetic_smoke.csv", header=[0, 1], index_col=0)
    np.testing.assert_allclose(gap.loc["T1", ("WT", "shaspec non-ded.")], nd.loc["T1", ("WT", "shaspec")], atol=1e-3)
    dao = pd.read_csv(out / "dao_dao_loss_brats_synthetic_smoke.csv", header=[0, 1], index_col=0)
    assert list(dao.columns.get_level_values(1)) == ["ce", "kl", "l1", "mse"]
    assert list(dao.index) == ["T1 ET", "T1 TC", "T1 WT", "Avg ET", "Avg TC", "Avg WT"]
    labels = [r[:2] for r in md_table(out / "dao_dao_loss_brats_synthetic_smoke.md")]
    assert labels == [["T1", "ET"], ["T1", "TC"], ["T1", "WT"], ["Avg (15 subsets)", "ET"], ["Avg (15 subsets)", "TC"],
                      ["Avg (15 subsets)", "WT"]]
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
    from missbench.report import figures, load_store
    from missbench.report.model import pools

    sweep = tmp_path / "ab"
    for seed in (0, 1):
        for params in ({"alpha": 0}, {"alpha": 0.01}, {}, {"alpha": 1}, {"beta": 0}, {"beta": 0.2}):
            fake_run(sweep, "shaspec", seed, protocol="alpha_beta", params=params, n_cases=3)
    store = load_store(sweep)
    (pool,) = pools(store)
    assert "shaspec[alpha=0.1,beta=0.02]" in [c.label for c in pool.columns]  # the default point, by its values
    paths = figures.sweep_curves(pool, store, tmp_path / "fig" / "ab")
    assert [p.suffix for p in paths] == [".pdf", ".png", ".txt"]
    assert paths[2].read_text().split() == sorted(store.runs)  # both panels' runs: the default point is shared


def test_classification_table_names_its_rates_and_realised_shares(tmp_path):
    for method, skill in (("smil", 0.9), ("zero_fill", 0.6)):
        for seed in (0, 1):
            for rate in (0.2, 0.5):
                fake_classification_run(tmp_path / "slots", method, seed, rate, "slots", skill)
                fake_classification_run(tmp_path / "audio", method, seed, rate, "modality_rate", skill)
    assert main([str(tmp_path), "--out", str(tmp_path / "t"), "--no-figures"]) == 0
    table = pd.read_csv(tmp_path / "t" / "classification_missing_slots_avmnist_synthetic_smoke.csv", header=[0, 1], index_col=0)
    assert list(table.index) == [0.2, 0.5]
    assert list(dict.fromkeys(table.columns.get_level_values(0))) == ["Accuracy (%)", "F1-micro (%)", "F1-macro (%)", "AUC (%)"]
    rows = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "slots").rglob("rows.parquet")))
    spec = {p.parent.name: json.loads(p.read_text())["missing_rate"] for p in (tmp_path / "slots").rglob("model.json")}
    rows["missing_rate"] = rows.model_id.map(spec)
    acc = rows[rows.method == "smil"].groupby(["seed", "missing_rate"]).value.mean().groupby("missing_rate").mean() * 100
    assert table[("Accuracy (%)", "smil")].to_numpy() == pytest.approx(acc.to_numpy(), abs=1e-3)
    slots = md_table(tmp_path / "t" / "classification_missing_slots_avmnist_synthetic_smoke.md")
    assert [r[:3] for r in slots] == [["0.2", "0.180", "0.190"], ["0.5", "0.375", "0.385"]]  # p, realised train / test
    text = (tmp_path / "t" / "classification_missing_slots_avmnist_synthetic_smoke.md").read_text()
    assert "p (slot-missing probability)" in text and "realised share" in text
    audio = (tmp_path / "t" / "classification_audio_rate_avmnist_synthetic_smoke.md").read_text()
    assert "r (share of training samples with audio)" in audio and "tested on image only" in audio
    assert "missing rate" not in audio


def test_bad_results_folder_is_an_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 1


def test_real_shaspec_smoke_run_writes_features_and_the_feature_figure(tmp_path):
    from missbench.cli import main as bench

    assert bench(["--protocol", "non_dedicated", "--budget", "smoke", "--methods", "shaspec", "--no-progress", "--threads", "1",
                  "--out", str(tmp_path / "s")]) == 0
    run_dir = next(p for p in (tmp_path / "s").iterdir() if p.is_dir())
    (score,) = ModelFolder(run_dir).scores()
    with np.load(score.file(FEATURES)) as z:
        assert z["shared"].shape[:2] == z["specific"].shape[:2] == (2, 4)  # test cases x modalities
        assert list(z["modalities"]) == list(MODS)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["method_params_resolved"]["dao"] == "l1"
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "fig_features.png").exists()
    assert re.search(r"shaspec_random_seed0_\w+", (tmp_path / "t" / "fig_features.runs.txt").read_text())


def test_pools_of_one_case_one_seed_or_one_method_give_every_table_and_figure(tmp_path, capsys):
    """The project's own alpha_beta, dao_loss and dedicated smoke budgets score one test case: box plots of single
    values, a single-method and a single-seed pool are drawn, and whatever cannot be (a rank diagram of one case) is
    skipped with its reason, never a crash."""
    for params in ({"alpha": 0}, {}, {"beta": 0}):
        fake_run(tmp_path / "ab", "shaspec", 0, protocol="alpha_beta", params=params, n_cases=1)
    for subset in ("T1", "FLAIR"):  # one method, one seed, one case
        fake_run(tmp_path / "ded", "zero_fill", 0, protocol="dedicated", mode="dedicated", train_subset=subset, n_cases=1,
                 dataset_params={"size": 16})
    assert main([str(tmp_path), "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "failed" not in out
    files = {p.name for p in (tmp_path / "t").iterdir()}
    for pool in ("alpha_beta_brats_synthetic_smoke", "dedicated_brats_synthetic_smoke"):
        assert {f"fig_cases_{pool}.png", f"fig_heatmap_{pool}.png", f"dice_{pool}.tex"} <= files
    assert "fig_alpha_beta_alpha_beta_brats_synthetic_smoke.pdf" in files
    assert "rank diagram alpha_beta_brats_synthetic_smoke: skipped (a Friedman test needs >= 3 variants and >= 2 cases" in out


def test_a_failing_table_or_figure_is_one_line_naming_its_pool_and_the_exit_status_counts_them(tmp_path, capsys, monkeypatch):
    from missbench.report import figures

    for m, skill in (("shaspec", 0.7), ("zero_fill", 0.3)):
        fake_run(tmp_path / "nd", m, 0, skill=skill, n_cases=3)
    fake_run(tmp_path / "nd", "shaspec", 0, n_cases=2)  # a pool of its own: n_test=2

    def broken(pool, *args, **kwargs):
        raise AttributeError("'numpy.float64' object has no attribute 'dropna'")

    monkeypatch.setattr(figures, "case_boxes", broken)
    assert main([str(tmp_path), "--out", str(tmp_path / "t")]) == 2  # one per pool
    lines = capsys.readouterr().out.splitlines()
    failed = [line for line in lines if ": failed (" in line]
    assert failed == [f"box plots non_dedicated_brats_synthetic_smoke{s}: failed (AttributeError: 'numpy.float64' object has no "
                      f"attribute 'dropna')" for s in ("", "_n_test-2")]
    files = {p.name for p in (tmp_path / "t").iterdir()}  # everything else is written
    assert {"fig_heatmap_non_dedicated_brats_synthetic_smoke.png", "dice_non_dedicated_brats_synthetic_smoke_n_test-2.md",
            "run_costs.md"} <= files and not any(f.startswith("fig_cases") for f in files)
    assert lines[-1].startswith("2 of ") and "tables and figures failed" in lines[-1]


def test_a_store_of_only_failed_runs_says_so(tmp_path, capsys):
    for seed in (0, 1):
        fake_run(tmp_path / "s", "shaspec", seed, state="failed", n_cases=2)
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "t")]) == 1
    assert "no finished runs" in capsys.readouterr().err
