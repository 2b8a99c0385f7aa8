"""Statistics for the tables and figures (Demsar, JMLR 2006): Holm over distinct tests,
paired Wilcoxon tests against the best method, patient-level bootstrap CIs, Friedman + Nemenyi with
cases as blocks, and a permutation chance level for the share of variance a grouping explains."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

#: Bootstrap resamples and seed of the Avg-row confidence intervals (fixed: reruns are byte-identical).
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
#: Fewest cases (patients) for which a bootstrap CI is printed; below it the CI is withheld.
MIN_CI_CASES = 10
#: Label permutations (seeded) behind the chance level of a variance share.
PERMUTATIONS = 999
PERMUTATION_SEED = 0


def holm(pvalues: list[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down; monotone; capped at 1), in the input order.

    NaN p-values (no test possible) stay NaN and do not count towards the number of tests.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def paired_wilcoxon(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p of the Wilcoxon signed-rank test on paired scores; pairs with a NaN are dropped.

    Returns 1.0 when every difference is zero and NaN when no pair is left (`signed_rank_p` does the test).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = ~(np.isnan(a) | np.isnan(b))
    d = a[keep] - b[keep]
    if len(d) == 0:
        return math.nan
    if np.allclose(d, 0):
        return 1.0
    return signed_rank_p(d)


#: Most non-zero differences for which `signed_rank_p` is exact; above it, the normal approximation.
EXACT_MAX = 50


def signed_rank_p(d: np.ndarray) -> float:
    """Two-sided p of the Wilcoxon signed-rank test of differences ``d`` (zeros discarded, Wilcoxon's rule).

    Up to EXACT_MAX differences the p is exact: the null distribution of the sum of positive ranks under
    every sign flip, counted by dynamic programming over the doubled (mid)ranks, which are integers, so
    ties are exact too (the conditional distribution a complete permutation test gives, at the cost of
    n x n(n+1) additions instead of 2^n permutations; scipy enumerates the 2^n flips when there are ties).
    Without ties it equals scipy's exact test. Above EXACT_MAX: the normal approximation with the tie
    correction, as scipy's.
    """
    d = np.asarray(d, float)
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return 1.0
    ranks = stats.rankdata(np.abs(d))
    doubled = np.rint(2 * ranks).astype(np.int64)
    t = int(doubled[d > 0].sum())
    if n <= EXACT_MAX:
        counts = np.zeros(int(doubled.sum()) + 1)
        counts[0] = 1.0
        for r in doubled:  # every subset sum of the doubled ranks, counted: the 2^n sign flips
            counts[r:] = counts[r:] + counts[:-r].copy() if r else counts[r:] * 2
        total = counts.sum()
        low, high = counts[:t + 1].sum() / total, counts[t:].sum() / total
        return float(min(1.0, 2 * min(low, high)))
    r_plus = t / 2
    mean = n * (n + 1) / 4
    _, tie_counts = np.unique(ranks, return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24 - (tie_counts ** 3 - tie_counts).sum() / 48
    if var <= 0:
        return 1.0
    z = (r_plus - mean) / math.sqrt(var)
    return float(min(1.0, 2 * stats.norm.sf(abs(z))))


def smallest_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p the exact signed-rank test can give with ``n`` pairs: 2 / 2^n."""
    return min(1.0, 2.0 / 2.0 ** n)


def compare_with_best(per_case: pd.DataFrame, higher_is_better: bool) -> pd.DataFrame:
    """Per (eval_subset, region): every variant against the best one, Holm-corrected over these distinct tests.

    ``per_case``: columns variant, eval_subset, region, case_id, value (seed-averaged per case). The best
    variant's own comparison (with the runner-up) is the runner-up's test, so each pair is tested once:
    k - 1 tests for k variants. Returns one row per test: eval_subset, region, variant, best, runner_up
    (whether ``variant`` is the runner-up), n_cases, p, p_holm.
    """
    out = []
    table = per_case.groupby(["eval_subset", "region", "case_id", "variant"], sort=True).value.mean().unstack("variant")
    for (subset, region), wide in table.groupby(level=["eval_subset", "region"], sort=True):
        means = wide.mean().dropna()
        if len(means) < 2:
            continue
        ranked = means.sort_values(ascending=not higher_is_better, kind="stable")
        best = ranked.index[0]
        for v in sorted(ranked.index[1:]):
            keep = wide[[v, best]].dropna()
            out.append({"eval_subset": subset, "region": region, "variant": v, "best": best, "runner_up": v == ranked.index[1],
                        "n_cases": len(keep), "p": paired_wilcoxon(wide[v].to_numpy(), wide[best].to_numpy())})
    frame = pd.DataFrame(out, columns=["eval_subset", "region", "variant", "best", "runner_up", "n_cases", "p"])
    frame["p_holm"] = holm(frame.p.to_numpy()) if len(frame) else []
    return frame


def significant(tests: pd.DataFrame, alpha: float) -> set[tuple[str, str, str]]:
    """(eval_subset, region, variant) that differ from the best (Holm p < alpha); the best itself when it
    differs from the runner-up."""
    out = set()
    for t in tests[tests.p_holm < alpha].itertuples():
        out.add((t.eval_subset, t.region, t.variant))
        if t.runner_up:
            out.add((t.eval_subset, t.region, t.best))
    return out


def bootstrap_mean_ci(matrix: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the mean over columns (subsets) of the column means over rows (patients).

    Patients (rows) are resampled with replacement and keep all their columns, so the pairing across
    subsets is kept; NaN scores (empty-region policy ``nan``) are left out of their column's mean.
    """
    x = np.asarray(matrix, float)
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.shape[0], size=(resamples, x.shape[0]))
    with _quiet():
        stat = np.nanmean(np.nanmean(x[idx], axis=1), axis=1)
    lo, hi = np.nanquantile(stat, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class RankTest:
    """Average ranks (1 = best) of k variants over n blocks (cases), Friedman's p and Nemenyi's critical difference."""

    ranks: pd.Series
    n_blocks: int
    friedman_p: float
    critical_difference: float
    alpha: float


def friedman_nemenyi(blocks: pd.DataFrame, higher_is_better: bool, alpha: float = 0.05) -> RankTest:
    """Ranks of the columns (variants) within each row (block: one case), Friedman test and Nemenyi CD
    (Demsar 2006). Blocks must be independent, so rows are cases, never subsets or regions of one case.

    Rows with a NaN are dropped. CD = q_alpha * sqrt(k (k + 1) / (6 n)), with q_alpha the studentised
    range quantile over sqrt(2).
    """
    x = blocks.dropna()
    k, n = x.shape[1], x.shape[0]
    if k < 3 or n < 2:
        raise ValueError(f"a Friedman test needs >= 3 variants and >= 2 cases, got {k} variants and {n} cases")
    ranks = (-x if higher_is_better else x).rank(axis=1, method="average").mean().sort_values(kind="stable")
    p = float(stats.friedmanchisquare(*[x[c].to_numpy() for c in x.columns]).pvalue)
    q = float(stats.studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)
    return RankTest(ranks, n, p, q * math.sqrt(k * (k + 1) / (6 * n)), alpha)


def variance_share(x: np.ndarray, groups: np.ndarray) -> float:
    """Share of the total variance of the rows of ``x`` explained by ``groups`` (eta squared, summed over columns)."""
    total = ((x - x.mean(0)) ** 2).sum()
    between = sum((groups == g).sum() * ((x[groups == g].mean(0) - x.mean(0)) ** 2).sum() for g in np.unique(groups))
    return float(between / total) if total > 0 else math.nan


@dataclass(frozen=True)
class ChanceLevel:
    """A variance share beside what random groupings of the same sizes give: their mean and the share of
    them at least as large as the observed value (a permutation p)."""

    observed: float
    chance: float
    p: float


def permutation_chance(x: np.ndarray, groups: np.ndarray, permutations: int = PERMUTATIONS,
                       seed: int = PERMUTATION_SEED) -> ChanceLevel:
    """`variance_share` of ``groups`` and its chance level under random relabelling (seeded): with few
    points the share is large by chance alone ((g - 1) / (n - 1) on average: 3/7 for 8 points in 4 groups)."""
    observed = variance_share(x, groups)
    rng = np.random.default_rng(seed)
    null = np.array([variance_share(x, rng.permutation(groups)) for _ in range(permutations)])
    return ChanceLevel(observed, float(null.mean()), float((1 + (null >= observed - 1e-12).sum()) / (permutations + 1)))


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's all-NaN-slice RuntimeWarnings (NaN results are handled by the callers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
