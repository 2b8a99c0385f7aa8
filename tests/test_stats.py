"""Statistics of missbench/report/stats.py against hand-worked examples and scipy."""

from __future__ import annotations

import math
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from missbench.report.stats import (
    bootstrap_mean_ci, compare_with_best, friedman_nemenyi, holm, paired_wilcoxon, permutation_chance, significant,
    smallest_wilcoxon_p, variance_share,
)


def test_holm_matches_a_hand_worked_example():
    # p sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> kept monotone at 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1; NaN (no test) stays NaN and does not count: m = 2 here
    out = holm([0.6, math.nan, 0.02])
    assert out[0] == pytest.approx(0.6) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm([0.5, 0.7]) == pytest.approx([1.0, 1.0])


def test_paired_wilcoxon_agrees_with_scipy_and_handles_degenerate_pairs():
    rng = np.random.default_rng(0)
    a, b = rng.random(15), rng.random(15)
    assert paired_wilcoxon(a, b) == pytest.approx(sps.wilcoxon(a - b).pvalue)
    assert paired_wilcoxon(a, a) == 1.0
    assert math.isnan(paired_wilcoxon(np.array([math.nan]), np.array([1.0])))
    # a NaN pair is dropped, not scored
    assert paired_wilcoxon(np.r_[a, math.nan], np.r_[b, 0.3]) == pytest.approx(paired_wilcoxon(a, b))


def test_compare_with_best_tests_each_pair_once_and_marks_the_best_by_its_runner_up_test():
    rng = np.random.default_rng(1)
    rows = []
    for v, shift in (("a", 0.3), ("b", 0.1), ("c", 0.0), ("d", 0.001)):
        for case in range(20):
            rows.append({"variant": v, "eval_subset": "T1", "region": "WT", "case_id": f"c{case}", "value": shift + 0.01 * rng.random()})
    t = compare_with_best(pd.DataFrame(rows), higher_is_better=True).set_index("variant")
    # best-vs-runner-up is one test, not two: k - 1 = 3 distinct tests for 4 variants, Holm over those 3
    assert list(t.index) == ["b", "c", "d"] and (t.best == "a").all() and t.runner_up.tolist() == [True, False, False]
    assert t.p_holm.tolist() == pytest.approx(holm(t.p.to_numpy()).tolist())
    assert t.p_holm.tolist() == pytest.approx(np.minimum(1, np.maximum.accumulate(t.p.sort_values() * [3, 2, 1])).reindex(t.index))
    assert significant(t.reset_index(), 0.05) == {("T1", "WT", v) for v in "abcd"}
    # c and d are within noise of each other but both far from the best: the best's mark comes from b's test
    assert (t.n_cases == 20).all()


def test_no_wilcoxon_test_can_reach_5_percent_with_5_cases_or_fewer():
    assert smallest_wilcoxon_p(5) == pytest.approx(0.0625) and smallest_wilcoxon_p(6) < 0.05
    a = np.arange(5.0)
    assert paired_wilcoxon(a + 1, a) == pytest.approx(smallest_wilcoxon_p(5))


def test_bootstrap_ci_resamples_patients_keeping_their_subsets():
    rng = np.random.default_rng(2)
    patient = rng.normal(size=(30, 1))
    x = patient + 0.01 * rng.normal(size=(30, 15))  # subsets of one patient move together
    lo, hi = bootstrap_mean_ci(x)
    assert lo < x.mean() < hi
    assert (lo, hi) == bootstrap_mean_ci(x)  # seeded
    # the interval reflects the patient-level spread: about mean +- 1.96 sd / sqrt(n)
    half = 1.96 * patient.std(ddof=1) / math.sqrt(30)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.25)


def test_friedman_nemenyi_ranks_and_critical_difference():
    blocks = pd.DataFrame({"a": np.arange(10) + 3.0, "b": np.arange(10) + 2.0, "c": np.arange(10) + 1.0, "d": np.arange(10.0)})
    t = friedman_nemenyi(blocks, higher_is_better=True)
    assert t.ranks.to_dict() == {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0} and t.n_blocks == 10
    # Demsar (2006) Table 5: q_0.05 = 2.569 for k = 4; CD = q sqrt(k (k+1) / (6 N))
    assert t.critical_difference == pytest.approx(2.569 * math.sqrt(4 * 5 / 60), abs=2e-3)
    assert t.friedman_p < 1e-5
    with pytest.raises(ValueError, match=">= 3 variants"):
        friedman_nemenyi(blocks[["a", "b"]], higher_is_better=True)


def test_permutation_chance_level_of_eight_points_in_four_groups_is_three_sevenths():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 5))  # no structure: 2 cases x 4 modalities
    groups = np.tile(np.arange(4), 2)
    level = permutation_chance(x, groups)
    assert level.observed == pytest.approx(variance_share(x, groups))
    assert level.chance == pytest.approx(3 / 7, abs=0.03)  # E[eta^2] = (g - 1) / (n - 1) under random labels
    assert level.p > 0.05 and level == permutation_chance(x, groups)  # seeded
    separated = x + 10 * np.eye(4)[groups] @ np.arange(20.0).reshape(4, 5)  # a distinct centre per group
    assert permutation_chance(separated, groups).observed > 0.95 and permutation_chance(separated, groups).p < 0.05
