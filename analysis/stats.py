"""Statistics for the tables and figures: Holm correction, paired Wilcoxon tests against the best
other method, patient-level bootstrap CIs of the Avg row, Friedman + Nemenyi critical difference
(harness.md §5.2; Demsar, JMLR 2006). Classification scores are missbench.core.metrics.classification_scores."""

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

    Returns 1.0 when every difference is zero and NaN when no pair is left.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = ~(np.isnan(a) | np.isnan(b))
    d = a[keep] - b[keep]
    if len(d) == 0:
        return math.nan
    if np.allclose(d, 0):
        return 1.0
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def compare_with_best_other(per_case: pd.DataFrame, higher_is_better: bool) -> pd.DataFrame:
    """Each variant against the best other variant, per (eval_subset, region), Holm-corrected over all tests.

    ``per_case``: columns variant, eval_subset, region, case_id, value (seed-averaged per case).
    Returns one row per test: eval_subset, region, variant, other, p, p_holm.
    """
    out = []
    table = per_case.groupby(["eval_subset", "region", "case_id", "variant"], sort=True).value.mean().unstack("variant")
    for (subset, region), wide in table.groupby(level=["eval_subset", "region"], sort=True):
        means = wide.mean()
        if len(means) < 2:
            continue
        for v in sorted(wide.columns):
            others = means.drop(v).dropna()
            if others.empty:
                continue
            other = others.idxmax() if higher_is_better else others.idxmin()
            out.append({"eval_subset": subset, "region": region, "variant": v, "other": other,
                        "p": paired_wilcoxon(wide[v].to_numpy(), wide[other].to_numpy())})
    frame = pd.DataFrame(out, columns=["eval_subset", "region", "variant", "other", "p"])
    frame["p_holm"] = holm(frame.p.to_numpy()) if len(frame) else []
    return frame


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
    """Average ranks (1 = best) of k variants over n cells, Friedman's p and Nemenyi's critical difference."""

    ranks: pd.Series
    n_cells: int
    friedman_p: float
    critical_difference: float
    alpha: float


def friedman_nemenyi(cells: pd.DataFrame, higher_is_better: bool, alpha: float = 0.05) -> RankTest:
    """Ranks of the columns (variants) within each row (cell), Friedman test and Nemenyi CD (Demsar 2006).

    Rows with a NaN are dropped. CD = q_alpha * sqrt(k (k + 1) / (6 n)), with q_alpha the studentised
    range quantile over sqrt(2).
    """
    x = cells.dropna()
    k, n = x.shape[1], x.shape[0]
    if k < 3 or n < 2:
        raise ValueError(f"a Friedman test needs >= 3 variants and >= 2 cells, got {k} variants and {n} cells")
    ranks = (-x if higher_is_better else x).rank(axis=1, method="average").mean().sort_values(kind="stable")
    p = float(stats.friedmanchisquare(*[x[c].to_numpy() for c in x.columns]).pvalue)
    q = float(stats.studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)
    return RankTest(ranks, n, p, q * math.sqrt(k * (k + 1) / (6 * n)), alpha)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's all-NaN-slice RuntimeWarnings (NaN results are handled by the callers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
