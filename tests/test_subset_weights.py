"""A protocol's subset weights (missbench/core/subset_weights.py): checked when the file loads, and the weighted Avg row
that tables print beside the uniform one, recomputed here from rows.parquet."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pandas as pd
import pytest

from missbench.core.subset_weights import modalities_of
from missbench.experiment.protocol import ProtocolError, load_protocol
from missbench.report import load_store
from missbench.report.model import pools
from missbench.report.tables import seg_table
from report_store import LABELS, fake_run

MR1379 = {"T1": 0.1, "T1c": 0.3, "FLAIR": 0.7, "T2": 0.9}


def independent(label: str, rates: dict[str, float]) -> float:
    """P(subset) under independent absence, conditioned on a non-empty subset, written out afresh."""
    def p(s: frozenset) -> float:
        return math.prod((1 - r) if m in s else r for m, r in rates.items())
    everything = [frozenset(c) for k in range(1, 5) for c in itertools.combinations(rates, k)]
    return p(modalities_of(label)) / sum(p(s) for s in everything)


def test_the_shipped_passion_weights_follow_its_rates():
    weights = load_protocol(Path(__file__).parent.parent / "protocols" / "passion_rates.yaml").subset_weights
    assert weights is not None and "PASSION" in weights.source
    for label in LABELS:
        assert weights.of(label) == pytest.approx(independent(label, MR1379), rel=1e-12)
    assert weights.of("FLAIR+T1+T1c+T2") > weights.of("T2")  # T2 is missing 90% of the time: rarely alone
    assert weights.of("T1+T1c") == pytest.approx(max(weights.of(s) for s in LABELS))
    assert load_protocol(Path(__file__).parent.parent / "protocols" / "non_dedicated.yaml").subset_weights is None


@pytest.mark.parametrize("block, says", [
    ("{source: s, weights: {FLAIR+PD: 1}}", "subset_weights.weights: 'FLAIR+PD' is not one of the protocol's subsets"),
    ("{source: s, weights: {FLAIR: -1}}", "subset_weights.weights.FLAIR: -1 is not a number in [0, inf)"),
    ("{source: s, weights: {FLAIR: 0}}", "subset_weights: the weights sum to 0"),
    ("{weights: {FLAIR: 1}}", "subset_weights.source: required"),
    ("{source: s, weights: {FLAIR: 1}, missing_rates: {T1: 0.1}}", "give exactly one of 'weights'"),
    ("{source: s, missing_rates: {T1: 0.1}}", "subset_weights.missing_rates: expected a rate for each of FLAIR, T1, T1c, T2"),
    ("{source: s, missing_rates: {T1: 1, T1c: 0, FLAIR: 0, T2: 0}}", "subset_weights.missing_rates.T1: 1 is not a number in [0, 1)"),
    ("{source: s, weight: {FLAIR: 1}}", "unknown key 'weight'; allowed: source, weights, missing_rates"),
])
def test_bad_weights_are_one_line_naming_file_key_and_value(tmp_path, block, says):
    path = tmp_path / "mine.yaml"
    path.write_text(f"inherit: non_dedicated\nsubset_weights: {block}\n")
    with pytest.raises(ProtocolError) as e:
        load_protocol(path)
    assert str(e.value).startswith(str(path)) and says in str(e.value) and "\n" not in str(e.value)


def test_a_file_s_weights_replace_its_parent_s_whole(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("inherit: passion_rates\nsubset_weights: {source: my clinic, weights: {FLAIR: 3, FLAIR+T1c: 1}}\n")
    weights = load_protocol(path).subset_weights
    assert weights.source == "my clinic" and weights.of("FLAIR") == 0.75 and weights.of("T1c+FLAIR") == 0.25 and weights.of("T2") == 0


def test_the_weighted_avg_row_is_the_declared_mean_of_the_rows(tmp_path):
    for method, skill in (("shaspec", 0.6), ("zero_fill", 0.4)):
        for seed in (0, 1):
            fake_run(tmp_path / "pr", method, seed, skill=skill, protocol="passion_rates", n_cases=6)
            fake_run(tmp_path / "nd", method, seed, skill=skill, n_cases=6)
    store = load_store(tmp_path)
    tables = {p.protocol: seg_table(p, store, "dice") for p in pools(store)}
    assert "Weighted Avg" not in [r.key for r in tables["non_dedicated"].rows]  # declares none
    table = tables["passion_rates"]
    keys = [r.key for r in table.rows]
    assert keys.index("Weighted Avg") == keys.index("Avg") + 1
    assert "Weighted Avg: the subsets weighted as protocol passion_rates's file declares" in table.caption
    assert "PASSION mr1379" in table.caption
    assert f"weighted as protocol passion_rates's file declares them, read when this table was made (per seed, then mean ± std " \
           f"over seeds): T1+T1c {100 * independent('T1+T1c', MR1379):.1f}%, " in table.caption  # the largest weight first
    rows = pd.concat(pd.read_parquet(p) for p in (tmp_path / "pr").rglob("rows.parquet"))
    rows = rows[(rows.metric == "dice") & (rows.region == "WT")]
    row = next(r for r in table.rows if r.key == "Weighted Avg")
    columns = list(table.columns)
    for method in ("shaspec", "zero_fill"):
        per_seed = rows[rows.method == method].groupby(["seed", "eval_subset"]).value.mean().unstack()
        by_seed = sum(per_seed[s] * independent(s, MR1379) for s in LABELS)
        expected = sum(per_seed[s].mean() * independent(s, MR1379) for s in LABELS)
        uniform = per_seed.mean().mean()
        assert abs(expected - uniform) > 0.005  # the weights really change the number
        text = row.cells[columns.index(("WT", method))].text
        assert text.startswith(f"{100 * expected:.2f} ± {100 * by_seed.std():.2f}"), (text, expected)
