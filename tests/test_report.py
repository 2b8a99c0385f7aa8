"""The report's one table model on fabricated stores, a situation each (what issue 13 found): mixed
comparability keys, a failed seed, a stopped run, mixed timing budgets, one method, two cases, a grid with
its default point, bold on displayed values, distinct tests, cases as rank blocks, published numbers, and
the console / `bench.py collect` printing the same model. Each test asserts what the tables say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.make_tables import main as make_tables  # noqa: E402
from missbench.report import console_tables, load_store, to_text  # noqa: E402
from missbench.report import figures  # noqa: E402
from missbench.report.model import bold_best, comparability_key, pools, stat_cell  # noqa: E402
from missbench.report.published import Refused, check_pairing, load_published, one_protocol, select  # noqa: E402
from missbench.report.render import to_markdown  # noqa: E402
from missbench.report.tables import seg_table, timing_table  # noqa: E402
from report_store import LABELS, fake_run, fake_timing_run, score_folder, seg_spec  # noqa: E402


def dice_tables(root: Path) -> dict:
    """The Dice table of every pool of the store at ``root``, by stem."""
    store = load_store(root)
    return {t.stem: t for t in (seg_table(p, store, "dice") for p in pools(store))}


def cell(table, row: str, region: str, column: str):
    """The cell of ``table`` at a row key, region and column label."""
    r = next(r for r in table.rows if r.key == row)
    return r.cells[table.columns.index((region, column))]


def mean_dice(root: Path, run_ids: list[str], subset: str, region: str) -> float:
    """Dice (%) of ``run_ids`` on one subset and region: mean over cases per run, then over runs."""
    rows = pd.concat(score_folder(root, r).rows() for r in run_ids)
    sel = rows[(rows.metric == "dice") & (rows.eval_subset == subset) & (rows.region == region)]
    return 100 * float(sel.groupby("run_id").value.mean().mean())


def test_comparability_key_is_the_spec_without_its_seed():
    a, b = seg_spec("shaspec", 0), seg_spec("shaspec", 1)
    assert comparability_key(a) == comparability_key(b)
    assert comparability_key(a) != comparability_key(seg_spec("shaspec", 0, training={"schedule": "poly"}))
    assert comparability_key(a) != comparability_key(seg_spec("shaspec", 0, dataset_params={"n_test": 3}))


def test_a_training_override_is_its_own_column_and_never_pooled(tmp_path):
    default = [fake_run(tmp_path, "zero_fill", s, skill=0.3) for s in (0, 1, 2)]
    poly = [fake_run(tmp_path, "zero_fill", s, skill=0.8, training={"schedule": "poly"}) for s in (0, 1, 2)]
    for s in (0, 1, 2):
        fake_run(tmp_path, "shaspec", s, skill=0.5)
    (table,) = dice_tables(tmp_path).values()
    assert [c for r, c in table.columns if r == "ET"] == ["shaspec", "zero_fill", "zero_fill[schedule=poly]"]
    assert cell(table, "FLAIR", "ET", "zero_fill").value == pytest.approx(mean_dice(tmp_path, default, "FLAIR", "ET"))
    assert cell(table, "FLAIR", "ET", "zero_fill[schedule=poly]").value == pytest.approx(mean_dice(tmp_path, poly, "FLAIR", "ET"))
    text = " ".join(to_text(table).split())  # console text is wrapped
    assert "Runs with different training overrides are separate columns, never pooled: zero_fill[schedule=poly]" in text
    assert "Every column trains with" not in text
    assert "zero_fill[schedule=poly]" in to_text(console_tables(load_store(tmp_path))[0])


def test_a_training_override_shared_by_every_column_is_stated(tmp_path):
    for m in ("shaspec", "zero_fill"):
        fake_run(tmp_path, m, 0, n_cases=3, training={"dropout": "uniform_subset"})
    (table,) = dice_tables(tmp_path).values()
    assert [c for r, c in table.columns if r == "ET"] == ["shaspec", "zero_fill"]
    assert "Every column trains with these overrides of its method's defaults: dropout=uniform_subset." in table.notes


def test_a_data_set_parameter_or_metric_policy_splits_the_table_and_each_names_the_others(tmp_path):
    default = [fake_run(tmp_path, "zero_fill", s, skill=0.3) for s in (0, 1)]
    for s in (0, 1):
        fake_run(tmp_path, "shaspec", s, skill=0.5)
    small = fake_run(tmp_path, "zero_fill", 0, skill=0.9, n_cases=3)
    nan = fake_run(tmp_path, "shaspec", 0, skill=0.9, empty="nan")
    tables = dice_tables(tmp_path)
    base, stem = "dice_non_dedicated_brats_synthetic_smoke", "non_dedicated_brats_synthetic_smoke"
    assert sorted(tables) == [base, f"{base}_empty-nan", f"{base}_n_test-3"]
    main = tables[base]
    assert main.used == sorted([*default, *(r.run_id for r in load_store(tmp_path).done() if r.run_id.startswith("shaspec")
                                            and r.run_id != nan)])
    assert cell(main, "FLAIR", "ET", "zero_fill").value == pytest.approx(mean_dice(tmp_path, default, "FLAIR", "ET"))
    reasons = {lo.runs: lo.reason for lo in main.left_out}
    assert reasons[(small,)] == f"incomparable (differ in n_test=3); their tables are named {stem}_n_test-3"
    assert reasons[(nan,)] == f"incomparable (differ in empty=nan); their tables are named {stem}_empty-nan"
    assert "differs from the other runs of this protocol, data set and budget in n_test=3" in tables[f"{base}_n_test-3"].caption
    assert "empty-region policy 'nan'" in tables[f"{base}_empty-nan"].caption
    other = {lo.reason for lo in tables[f"{base}_n_test-3"].left_out}
    assert f"incomparable (differ in n_test=20); their tables are named {stem}" in other
    md = to_markdown(main)
    assert f"Left out: {small}: incomparable (differ in n_test=3)" in md


def test_a_failed_seed_and_a_stopped_run_are_left_out_with_their_reason(tmp_path):
    done = [fake_run(tmp_path, "shaspec", s, skill=0.5) for s in (0, 1)]
    failed = fake_run(tmp_path, "shaspec", 2, skill=0.5, state="failed", failure="FloatingPointError: loss is nan")
    for s in (0, 1, 2):
        fake_run(tmp_path, "zero_fill", s, skill=0.3)
    stopped = fake_run(tmp_path, "zero_fill", 3, skill=0.3, state="stopped")
    (table,) = dice_tables(tmp_path).values()
    assert failed not in table.used and stopped not in table.used
    reasons = {lo.runs[0]: lo.reason for lo in table.left_out}
    assert reasons[failed] == "shaspec seed 2, failed: FloatingPointError: loss is nan"
    assert reasons[stopped].startswith("zero_fill seed 3, stopped: a model without DONE")
    c = cell(table, "T1", "WT", "shaspec")
    assert c.value == pytest.approx(mean_dice(tmp_path, done, "T1", "WT")) and c.count == "(2 seeds)"
    assert cell(table, "T1", "WT", "zero_fill").count == ""
    assert "Cells pool 3 seeds × 20 cases unless marked" in table.caption and "seeds shaspec 0, 1; zero_fill 0, 1, 2" in table.caption
    text = " ".join(to_text(table).split())  # console text is wrapped
    assert f"Left out: {failed}: shaspec seed 2, failed: FloatingPointError: loss is nan" in text and "(2 seeds)" in text


def test_timing_budgets_never_share_a_table_and_lifetime_rss_is_not_per_phase_memory(tmp_path):
    fake_timing_run(tmp_path, "zero_fill", 1, 16, "smoke", 0.01)
    fake_timing_run(tmp_path, "shaspec", 1, 16, "smoke", 0.05)
    fake_timing_run(tmp_path, "zero_fill", 2, 32, "default", 0.04, memory_kind="peak_cuda_allocated_mib")
    fake_timing_run(tmp_path, "zero_fill", 4, 16, "smoke", 0.02)  # the smoke budget redefined: another batch
    store = load_store(tmp_path)
    tables = {t.stem: t for t in (timing_table(p, store) for p in pools(store))}
    assert sorted(tables) == ["timing_brats_synthetic_default", "timing_brats_synthetic_smoke",
                              "timing_brats_synthetic_smoke_batch-4"]
    assert [r.key for r in tables["timing_brats_synthetic_smoke"].rows] == ["shaspec", "zero_fill"]
    assert [r.key for r in tables["timing_brats_synthetic_smoke_batch-4"].rows] == ["zero_fill"]
    assert "batch 1, patch 16x16x16" in tables["timing_brats_synthetic_smoke"].caption
    assert "batch 2, patch 32x32x32" in tables["timing_brats_synthetic_default"].caption
    columns = [n for _, n in tables["timing_brats_synthetic_smoke"].columns]
    cpu = dict(zip(columns, tables["timing_brats_synthetic_smoke"].rows[1].cells))
    assert cpu["train peak MiB"].text == cpu["infer peak MiB"].text == "-" and cpu["lifetime peak MiB"].text == "650"
    assert cpu["memory measure"].text == "RSS, process lifetime" and "batch" not in columns
    gpu = dict(zip(columns, tables["timing_brats_synthetic_default"].rows[0].cells))
    assert (gpu["train peak MiB"].text, gpu["infer peak MiB"].text, gpu["lifetime peak MiB"].text) == ("600", "650", "-")


def test_one_method_bolds_nothing_and_speaks_of_no_tests(tmp_path):
    for s in (0, 1):
        fake_run(tmp_path, "shaspec", s, skill=0.5)
    (table,) = dice_tables(tmp_path).values()
    assert not any(c.bold for r in table.rows for c in r.cells)
    assert "Bold" not in table.caption and "Holm" not in table.caption and "†" not in to_markdown(table)
    assert table.extras["tests"].empty and "**" not in "".join(line for line in to_markdown(table).splitlines() if line.startswith("| "))


def test_two_cases_withhold_the_ci_and_say_that_no_mark_can_appear(tmp_path):
    for m, skill in (("shaspec", 0.7), ("zero_fill", 0.3), ("mean_fill", 0.4)):
        fake_run(tmp_path, m, 0, skill=skill, n_cases=2)
    (table,) = dice_tables(tmp_path).values()
    ci = next(r for r in table.rows if r.key == "Avg 95% CI")
    assert {c.text for c in ci.cells} == {"n=2"}
    assert not table.extras["ci"].printed.any() and table.extras["ci"].ci_low.notna().all()
    assert "With 2 cases no such test can reach p < 0.05 (smallest possible p = 0.5), so no † can appear." in table.caption
    assert "printed only with at least 10 cases" in table.caption


def test_grid_points_are_labelled_by_their_values_the_default_included(tmp_path):
    for params in ({"alpha": 0}, {"alpha": 1}, {}, {"beta": 0}):
        fake_run(tmp_path / "ab", "shaspec", 0, protocol="alpha_beta", params=params, n_cases=3)
    for params in ({}, {"dao": "kl"}):
        fake_run(tmp_path / "dao", "shaspec", 0, protocol="dao_loss", params=params, n_cases=3)
    tables = dice_tables(tmp_path)
    ab = [c for r, c in tables["dice_alpha_beta_brats_synthetic_smoke"].columns if r == "ET"]
    assert ab == ["shaspec[alpha=0,beta=0.02]", "shaspec[alpha=0.1,beta=0]", "shaspec[alpha=0.1,beta=0.02]",
                  "shaspec[alpha=1,beta=0.02]"]
    assert [c for r, c in tables["dice_dao_loss_brats_synthetic_smoke"].columns if r == "ET"] == ["shaspec[dao=kl]", "shaspec[dao=l1]"]


def test_bold_is_chosen_on_the_displayed_values():
    tied = bold_best([stat_cell(61.2301, np.nan, 2), stat_cell(61.2349, np.nan, 2), stat_cell(60.0, np.nan, 2)], True)
    assert [c.text for c in tied] == ["61.23", "61.23", "60.00"] and [c.bold for c in tied] == [True, True, False]
    apart = bold_best([stat_cell(61.2301, np.nan, 2), stat_cell(61.2451, np.nan, 2)], True)
    assert [c.bold for c in apart] == [False, True]
    assert [c.bold for c in bold_best([stat_cell(1.0, np.nan, 2)], True)] == [False]  # nothing to compare with


def test_holm_counts_each_comparison_once(tmp_path):
    for m, skill in (("shaspec", 0.7), ("zero_fill", 0.3), ("mean_fill", 0.35), ("hemis", 0.5)):
        fake_run(tmp_path, m, 0, skill=skill, n_cases=8)
    (table,) = dice_tables(tmp_path).values()
    assert len(table.extras["tests"]) == 45 * 3  # 4 methods: 3 distinct tests per subset and region, not 4
    assert "Holm-corrected over the 135 distinct tests" in table.caption


def test_rank_diagram_ranks_within_cases(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    case_skill = rng.normal(0, 0.1, 12)  # patients differ more than methods: the blocks must be cases
    for m, skill in (("shaspec", 0.52), ("zero_fill", 0.5), ("mean_fill", 0.51)):
        fake_run(tmp_path, m, 0, skill=skill, n_cases=12, case_skill=case_skill)
    store = load_store(tmp_path)
    (pool,) = pools(store)
    blocks = figures.rank_blocks(pool, store)
    assert list(blocks.index) == [f"case{c:02d}" for c in range(12)] and sorted(blocks.columns) == ["mean_fill", "shaspec", "zero_fill"]
    titles = []
    monkeypatch.setattr(figures, "save", lambda fig, stem, runs: titles.append(fig._suptitle.get_text()) or [])
    figures.setup()
    figures.cd_diagram(pool, store, tmp_path / "fig")
    assert titles[0].startswith("Mean rank of Dice over 12 cases (blocks")


def test_figures_are_sized_for_a_column_or_the_page_with_greek_and_data_scaled_colours(tmp_path, monkeypatch):
    for params in ({"alpha": 0}, {}, {"alpha": 1}, {"beta": 0}):
        fake_run(tmp_path, "shaspec", 0, protocol="alpha_beta", params=params, n_cases=4)
    store = load_store(tmp_path)
    (pool,) = pools(store)
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, stem, runs: drawn.append(fig) or [])
    figures.setup()
    for draw in (figures.heatmap, figures.case_boxes, figures.cd_diagram, figures.sweep_curves):
        draw(pool, store, tmp_path / "fig")
    assert [round(f.get_size_inches()[0], 1) for f in drawn] == [6.9, 6.9, 6.9, 6.9]
    assert all(f.get_size_inches()[1] < 7 for f in drawn)  # no 10-30 inch figures
    values = [v for ax in drawn[0].axes[:3] for v in ax.images[0].get_array().compressed()]
    assert drawn[0].axes[0].images[0].get_clim() == (pytest.approx(min(values)), pytest.approx(max(values)))
    assert {ax.get_xlabel() for ax in drawn[3].axes} == {r"$\alpha$ ($\beta$ = 0.02)", r"$\beta$ ($\alpha$ = 0.1)"}
    assert all(t.get_fontsize() >= 5 for f in drawn for t in f.findobj(lambda a: hasattr(a, "get_fontsize")))


def test_dao_and_timing_figures_draw_one_bar_per_loss_and_per_method(tmp_path, monkeypatch):
    for seed in (0, 1):
        for params in ({}, {"dao": "kl"}, {"dao": "mse"}):
            fake_run(tmp_path / "dao", "shaspec", seed, protocol="dao_loss", params=params, n_cases=1)  # one case
    for m, seconds in (("shaspec", 0.05), ("zero_fill", 0.01)):
        fake_timing_run(tmp_path / "timing", m, 1, 16, "smoke", seconds)
    store = load_store(tmp_path)
    dao, timing = pools(store)
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, stem, runs: drawn.append((fig, runs)) or [])
    figures.setup()
    figures.dao_bars(dao, store, tmp_path / "dao")
    figures.timing_bars(timing, store, tmp_path / "timing")
    (fig, runs), (tfig, truns) = drawn
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["kl", "l1", "mse"] and len(runs) == 6
    assert len(fig.axes[0].patches) == 3 * 3 and fig.get_size_inches()[0] == pytest.approx(6.9)  # losses x regions
    bars = tfig.axes[0].patches
    assert [t.get_text() for t in tfig.axes[0].get_yticklabels()] == ["shaspec", "zero_fill"] and len(truns) == 2
    assert bars[0].get_width() == pytest.approx(0.055) and bars[1].get_width() == pytest.approx(0.011)  # median train s/iter


def test_signed_rank_p_is_exact_with_ties_and_zeros_at_a_fraction_of_the_cost():
    from itertools import product

    from scipy import stats as sps

    from missbench.report.stats import signed_rank_p

    d = np.array([0.5, -0.5, 1.0, 1.0, 2.0, 0.0, 3.0, -1.0, 0.5, 2.0, 4.0, 1.0])  # ties and a zero: scipy enumerates 2^n
    nz = d[d != 0]
    ranks = sps.rankdata(np.abs(nz))
    t = ranks[nz > 0].sum()
    flips = np.array([ranks[np.array(s, bool)].sum() for s in product((0, 1), repeat=len(nz))])  # every sign flip
    exact = min(1.0, 2 * min((flips <= t + 1e-9).mean(), (flips >= t - 1e-9).mean()))
    assert signed_rank_p(d) == pytest.approx(exact) == pytest.approx(sps.wilcoxon(nz).pvalue)
    rng = np.random.default_rng(3)
    plain = rng.normal(0.2, 1, 30)  # no ties: scipy's exact distribution
    assert signed_rank_p(plain) == pytest.approx(sps.wilcoxon(plain).pvalue)
    many = rng.normal(0.1, 1, 200)  # above EXACT_MAX: the normal approximation, as scipy's
    assert signed_rank_p(many) == pytest.approx(sps.wilcoxon(many, method="asymptotic").pvalue)


def test_published_numbers_are_faithful_and_each_carries_its_protocol():
    protocols, entries = load_published()
    assert set(protocols) == {"A", "B", "M"} and len({e.id for e in entries}) == len(entries)
    for e in entries:
        assert e.citation and e.source and "shared/" not in e.source and e.protocol in protocols
        for region, values in e.dice.items():  # every transcribed per-subset column gives the printed average
            assert np.mean(list(values.values())) == pytest.approx(e.average[region], abs=0.01), (e.id, region)
    shaspec = {e.id: e for e in entries}
    assert shaspec["shaspec"].protocol == "B" and shaspec["mmformer_shaspec_t1"].protocol == "M"  # mmFormer's own split
    assert shaspec["mmformer_shaspec_t1"].dice["ET"]["T1"] == 32.53 and shaspec["rfnet_readme"].average["ET"] == 57.12
    with pytest.raises(Refused, match="refusing to put BraTS2018 protocol A and B numbers in one table"):
        one_protocol([*select("A")[:1], *select("B")[:1]])
    with pytest.raises(Refused, match="beside runs of data set brats_synthetic"):
        check_pairing(select("A"), {"dataset": "brats_synthetic"})


def test_published_columns_stand_only_beside_runs_of_their_protocol(tmp_path, capsys):
    split = {"split": "/data/U-HVED/splits/dataset_split_3.csv"}
    for m, skill in (("shaspec", 0.6), ("rfnet", 0.5)):
        fake_run(tmp_path / "a", m, 0, skill=skill, protocol="brats2018_a", dataset="brats2018", dataset_params=split, n_cases=4)
    fake_run(tmp_path / "syn", "shaspec", 0, n_cases=4)
    assert make_tables([str(tmp_path), "--out", str(tmp_path / "t"), "--no-figures", "--published", "A"]) == 0
    out = capsys.readouterr().out
    assert "published numbers not added to dice_non_dedicated_brats_synthetic_smoke: refusing to put published protocol A " \
           "numbers beside runs of data set brats_synthetic, not BraTS2018 protocol A or B" in out
    table = pd.read_csv(tmp_path / "t" / "dice_brats2018_a_brats2018_smoke.csv", header=[0, 1], index_col=0)
    assert table.loc["T1", ("ET", "Robust-MSeg (published)")] == 17.29 and table.loc["Avg", ("WT", "U-HeMIS (published)")] == 74.05
    assert "mmFormer (published)" not in table["ET"].columns  # its own split (protocol M): never beside protocol A runs
    assert "ShaSpec (published)" not in table["ET"].columns  # protocol B: never beside protocol A runs
    md = (tmp_path / "t" / "dice_brats2018_a_brats2018_smoke.md").read_text()
    assert "not measured here; they take no part in bold, tests or CIs" in md
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| ")]
    published_at = [i for i, name in enumerate(lines[0]) if name.endswith("(published)")]
    assert len(published_at) == 3 * 3 and not any("**" in row[i] for row in lines[1:] for i in published_at)
    assert any("**" in c for row in lines[1:] for c in row)  # the measured ones are bolded
    published = (tmp_path / "t" / "published_A.md").read_text()
    assert "RFNet (published)" in published and "shaspec (measured)" in published and "ShaSpec (published)" not in published
    assert make_tables([str(tmp_path / "a"), "--out", str(tmp_path / "b"), "--no-figures", "--published", "B"]) == 0
    assert "refusing to put published protocol B numbers beside runs of BraTS2018 protocol A" in capsys.readouterr().out
    assert "ShaSpec (published)" in (tmp_path / "b" / "published_B.md").read_text()
    assert "(published)" not in (tmp_path / "b" / "dice_brats2018_a_brats2018_smoke.md").read_text()


def test_collect_prints_the_report_table_with_the_runs_it_left_out(tmp_path, capsys):
    from missbench.cli import main as bench

    for s in (0, 1):
        fake_run(tmp_path, "zero_fill", s, skill=0.3, n_cases=2)
    failed = fake_run(tmp_path, "zero_fill", 2, state="failed", n_cases=2)
    assert bench(["collect", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    table = console_tables(load_store(tmp_path))[0]
    blocks = to_text(table).split("\n\n")[1:-1]  # the region blocks: the same model and numbers as make_tables
    assert all(b in out for b in blocks) and len(blocks) == 3
    words = " ".join(out.split())  # console text is wrapped
    assert f"Left out: {failed}: zero_fill seed 2, failed: ValueError: boom" in words and "Runs used: 2" in out
    assert "FLAIR+T1+T1c+T2" in out and set(LABELS) <= set(out.split())


def test_the_report_and_its_site_import_no_torch(tmp_path):
    for m, skill in (("shaspec", 0.7), ("zero_fill", 0.3), ("mean_fill", 0.4)):
        fake_run(tmp_path / "s", m, 0, skill=skill, n_cases=3)
    code = ("import sys; from pathlib import Path; from missbench.report import load_store; "
            "from missbench.report.write import Options, Report; from missbench.report.site import write_site; "
            f"r = Report(load_store(Path({str(tmp_path / 's')!r})), Options(), lambda m: None); "
            f"r.write(Path({str(tmp_path / 't')!r})); write_site(r, Path({str(tmp_path / 'site')!r}), Path({str(tmp_path / 't')!r})); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    assert (tmp_path / "t" / "fig_ranks_non_dedicated_brats_synthetic_smoke.png").exists()
    assert (tmp_path / "site" / "index.html").exists()
