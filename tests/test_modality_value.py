"""Modality value (missbench/report/modality.py): the matched marginal contribution, the Shapley value and the rate of
monotonicity violations of every modality, recomputed here independently from the stores' rows.parquet files (Shapley
by enumerating every order of the modalities), on runs whose per-case effects are known; a modality that hurts gives
violations; the paired case-bootstrap CI brackets its point and narrows with more cases; pools without a subset lattice
are skipped with one line; make_tables writes the table and the heat map and the site links them."""

from __future__ import annotations

import json
import sys
from itertools import permutations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.make_tables import main as make_tables  # noqa: E402
from missbench.core.subsets import all_subsets  # noqa: E402
from missbench.report import load_store  # noqa: E402
from missbench.report.modality import modality_table  # noqa: E402
from missbench.report.model import pools  # noqa: E402
from report_store import MODS, fake_classification_run, fake_run, seg_spec, write_run  # noqa: E402

ND = "non_dedicated_brats_synthetic_smoke"
REGIONS = ("ET", "TC", "WT")


def parquet_rows(root: Path) -> pd.DataFrame:
    """Every rows.parquet under ``root``, read with pandas alone."""
    return pd.concat([pd.read_parquet(f) for f in sorted(root.rglob("rows.parquet"))], ignore_index=True)


def score(scores: dict[str, float], members: set[str], mods: tuple[str, ...], empty: float) -> float:
    return scores["+".join(m for m in mods if m in members)] if members else empty


def expected(rows: pd.DataFrame, mods: tuple[str, ...], empty: float, margin: float = 1.0) -> dict[tuple, float]:
    """(method, region, modality, measure) -> value, from per-case rows (``value`` in points) by brute force: per seed and
    case, every pair S -> S + q (S non-empty), and the Shapley value as the mean over all orders of the modalities of what
    q adds to those before it (v(empty) = ``empty``); the mean over seeds per case, then over cases (and S)."""
    out: dict[tuple, list] = {}
    for (method, region, seed, case), g in rows.groupby(["method", "region", "seed", "case_id"]):
        scores = dict(zip(g.eval_subset, g.value))
        for q in mods:
            others = [m for m in mods if m != q]
            gains = [score(scores, set(s.modalities) | {q}, mods, empty) - score(scores, set(s.modalities), mods, empty)
                     for s in all_subsets(others)]
            orders = list(permutations(mods))
            shapley = sum(score(scores, set(o[:o.index(q) + 1]), mods, empty) - score(scores, set(o[:o.index(q)]), mods, empty)
                          for o in orders) / len(orders)
            for measure, value in (("marginal", np.mean(gains)), ("shapley", shapley),
                                   ("violations", 100 * np.mean([x < -margin for x in gains]))):
                out.setdefault((method, region, q, measure, case), []).append(value)
    per_case = {k: np.mean(v) for k, v in out.items()}  # over seeds
    result: dict[tuple, list] = {}
    for (*key, _), v in per_case.items():
        result.setdefault(tuple(key), []).append(v)
    return {k: float(np.mean(v)) for k, v in result.items()}


def table_values(out: Path, pool: str) -> pd.DataFrame:
    """The numbers behind the written table: its values.csv, indexed by (variant, region, modality, measure)."""
    d = pd.read_csv(out / f"modality_{pool}.values.csv")
    d["region"] = d.region.astype(object).where(d.region.notna(), "")  # classification: no region
    return d.set_index(["variant", "region", "modality", "measure"])


def lattice_run(sweep: Path, seed: int, n_cases: int, effect: dict[str, float], noise: float = 0.03) -> str:
    """A segmentation run whose Dice on subset S is 0.4 + the sum of ``effect`` over S + a per-case offset + noise."""
    rng = np.random.default_rng([seed, n_cases])
    offsets = rng.normal(0, 0.05, n_cases)
    rows = [{"case_id": f"case{c:03d}", "eval_subset": s.label, "eval_code": s.code, "n_available": len(s), "region": region,
             "metric": "dice", "value": float(np.clip(0.4 + sum(effect.get(m, 0) for m in s.modalities) + offsets[c]
                                                      + noise * rng.standard_normal(), 0, 1))}
            for s in all_subsets(MODS) for c in range(n_cases) for region in ("ET", "ETpp", "TC", "WT")]
    return write_run(sweep, seg_spec("zero_fill", seed, n_cases=n_cases), pd.DataFrame(rows), {"method_params_resolved": {}})


def test_values_equal_an_independent_recomputation_from_rows_parquet(tmp_path):
    offsets = np.random.default_rng(3).normal(0, 0.1, 12)
    for seed in (0, 1):
        fake_run(tmp_path / "nd", "shaspec", seed, skill=0.6, n_cases=12, case_skill=offsets)
        fake_run(tmp_path / "nd", "zero_fill", seed, skill=0.3, n_cases=12, case_skill=offsets)
    assert make_tables([str(tmp_path / "nd"), "--out", str(tmp_path / "t"), "--no-figures"]) == 0
    got = table_values(tmp_path / "t", ND)
    rows = parquet_rows(tmp_path / "nd")
    rows = rows[(rows.metric == "dice") & rows.region.isin(REGIONS)].assign(value=lambda d: 100 * d.value)
    want = expected(rows, MODS, empty=0.0)
    assert len(want) == 2 * 3 * 4 * 3 == len(got)
    for (method, region, q, measure), value in want.items():
        assert got.loc[(method, region, q, measure), "value"] == pytest.approx(value, abs=1e-4), (method, region, q, measure)
    # fake_run adds 5 Dice points per available modality: every modality's matched marginal contribution is about 5
    marginal = got.xs("marginal", level="measure")
    assert ((marginal.ci_low < 5) & (5 < marginal.ci_high)).mean() > 0.8 and marginal.printed.all()
    for method in ("shaspec", "zero_fill"):  # Shapley's efficiency: the values sum to v(all) - v(empty), per region
        for region in REGIONS:
            full = rows[(rows.method == method) & (rows.region == region) & (rows.eval_subset == "FLAIR+T1+T1c+T2")]
            total = got.xs(("shapley", method, region), level=("measure", "variant", "region")).value.sum()
            assert total == pytest.approx(full.groupby("seed").value.mean().mean(), abs=1e-3)
    md = (tmp_path / "t" / f"modality_{ND}.md").read_text()
    assert f"| shaspec | ET | FLAIR | {got.loc[('shaspec', 'ET', 'FLAIR', 'marginal'), 'value']:.2f} |" in md
    assert "S = ∅ is left out" in md and "more than 1 point" in md and "2 seeds" not in md


def test_classification_values_use_the_chance_level_for_the_empty_subset(tmp_path):
    """Images alone always right, audio alone always wrong, both right on half the samples: every value is known."""
    n = 20
    spec = {"protocol": "non_dedicated", "mode": "non_dedicated", "method": "hemis", "method_params": {}, "dataset": "avmnist_synthetic",
            "dataset_params": {"n_test": n}, "train_subset": None, "eval_subsets": ["image", "audio", "image+audio"], "seed": 0,
            "budget": {"iterations": 4, "batch": 8, "patch": None, "checkpoint_every": 2}, "budget_name": "smoke", "training": {},
            "metric": {"empty": "one", "et_threshold": 500}}
    correct = {"image": np.ones(n), "audio": np.zeros(n), "image+audio": np.arange(n) % 2 == 0}
    rows = pd.DataFrame([{"case_id": f"s{i:02d}", "eval_subset": s, "eval_code": code, "n_available": s.count("+") + 1, "condition": s,
                          "target": 0, "pred": 0 if correct[s][i] else 1, "prob": [0.5, 0.3, 0.2], "metric": "correct",
                          "value": float(correct[s][i])} for s, code in (("image", 1), ("audio", 2), ("image+audio", 3)) for i in range(n)])
    write_run(tmp_path / "cls", spec, rows, {"method_params_resolved": {}})
    fake_classification_run(tmp_path / "cls", "smil", 0, 0.1, "slots", 0.8)  # scored under its own masks: no lattice
    assert make_tables([str(tmp_path / "cls"), "--out", str(tmp_path / "t"), "--no-figures"]) == 0
    got = table_values(tmp_path / "t", "non_dedicated_avmnist_synthetic_smoke").value
    chance = 100 / 3
    want = {("image", "marginal"): 50, ("audio", "marginal"): -50, ("image", "violations"): 0, ("audio", "violations"): 50,
            ("image", "shapley"): ((100 - chance) + (50 - 0)) / 2, ("audio", "shapley"): ((0 - chance) + (50 - 100)) / 2}
    for (q, measure), value in want.items():
        assert got[("hemis", "", q, measure)] == pytest.approx(value, abs=1e-4)
    frame = parquet_rows(tmp_path / "cls")
    frame = frame[frame.method == "hemis"].assign(value=lambda d: 100 * d.value, region="")
    brute = expected(frame, ("image", "audio"), empty=chance)
    assert all(got[(m, r, q, measure)] == pytest.approx(v, abs=1e-4) for (m, r, q, measure), v in brute.items())
    text = (tmp_path / "t" / "modality_non_dedicated_avmnist_synthetic_smoke.md").read_text()
    assert "chance level 100/3" in text


def test_a_modality_that_hurts_gives_violations_and_the_ci_brackets_its_point_and_narrows_with_more_cases(tmp_path):
    effect = {"FLAIR": 0.12, "T1": 0.04, "T1c": 0.06, "T2": -0.03}
    widths = {}
    for n in (10, 40):
        lattice_run(tmp_path / str(n), 0, n, effect)
        store = load_store(tmp_path / str(n))
        (pool,) = pools(store)
        table = modality_table(pool, store)
        v = table.extras["values"].set_index(["region", "modality", "measure"])
        assert v.loc[("WT", "T2", "marginal"), "value"] == pytest.approx(-3, abs=1)  # what T2 takes away, in Dice points
        assert v.loc[("WT", "FLAIR", "marginal"), "value"] == pytest.approx(12, abs=1)
        assert v.loc[("WT", "T2", "violations"), "value"] > 50 and v.loc[("WT", "FLAIR", "violations"), "value"] < 1
        assert (v.ci_low <= v.value + 1e-9).all() and (v.value <= v.ci_high + 1e-9).all() and v.printed.all()
        widths[n] = v.ci_high - v.ci_low
    spread = widths[10] > 0  # a rate of 0 in every resample has no width to lose
    assert (widths[40][spread] < widths[10][spread]).mean() > 0.9 and widths[40].sum() < 0.7 * widths[10].sum()
    # a larger margin counts fewer violations
    store = load_store(tmp_path / "10")
    (pool,) = pools(store)
    strict = modality_table(pool, store, margin=5).extras["values"].set_index(["region", "modality", "measure"])
    loose = modality_table(pool, store).extras["values"].set_index(["region", "modality", "measure"])
    assert strict.loc[("WT", "T2", "violations"), "value"] < loose.loc[("WT", "T2", "violations"), "value"]


def test_pools_without_a_subset_lattice_are_skipped_with_one_line(tmp_path, capsys):
    for subset in ("T1", "FLAIR+T1"):
        fake_run(tmp_path / "ded", "zero_fill", 0, protocol="dedicated", mode="dedicated", train_subset=subset, n_cases=2)
    fake_classification_run(tmp_path / "audio", "smil", 0, 0.1, "modality_rate", 0.8)  # tested on images only
    fake_run(tmp_path / "one", "shaspec", 0, n_cases=1, dataset_params={"size": 16})  # one case: values, CIs withheld
    assert make_tables([str(tmp_path), "--out", str(tmp_path / "t"), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "failed" not in out
    assert ("modality value dedicated_brats_synthetic_smoke: skipped (dedicated models are each scored on their own subset "
            "only: no model has a subset and its superset)") in out
    assert ("modality value audio_rate_avmnist_synthetic_smoke: skipped (no subset is scored beside itself plus one modality "
            "(scored: image))") in out
    one = (tmp_path / "t" / f"modality_{ND}.md").read_text()
    assert "| n=1 |" in one


def test_make_tables_writes_the_table_and_heat_map_and_the_site_links_them(tmp_path):
    for seed in (0, 1):
        for m, skill in (("shaspec", 0.6), ("zero_fill", 0.3)):
            fake_run(tmp_path / "nd", m, seed, skill=skill, n_cases=3)
    site = tmp_path / "site"
    assert make_tables([str(tmp_path / "nd"), "--site", str(site), "--margin", "2"]) == 0
    files = {p.name for p in (site / "tables").iterdir()}
    assert {f"modality_{ND}.{ext}" for ext in ("md", "tex", "csv", "values.csv", "runs.txt")} <= files
    assert {f"fig_modality_{ND}.{ext}" for ext in ("pdf", "png", "runs.txt")} <= files
    assert "more than 2 points" in (site / "tables" / f"modality_{ND}.md").read_text()
    page = (site / "pools" / f"{ND}.html").read_text()
    assert 'id="t-modality"' in page and f"fig_modality_{ND}.png" in page
    assert f'href="pools/{ND}.html#t-modality"' in (site / "index.html").read_text()
    data = json.loads((site / "pools" / f"{ND}.json").read_text())
    assert len(data["tables"]["modality"]["rows"]) == 2 * 3 * 4
