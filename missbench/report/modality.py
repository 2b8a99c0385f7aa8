"""Modality value from stored rows, no training: per method and modality q, the matched marginal contribution
(score(S + q) - score(S) over the non-empty subsets S without q, both scored on the same case by the same model), the
Shapley value over the modality lattice and the rate of monotonicity violations (adding q lowers a case's score by more
than a margin), each with a paired case-bootstrap CI; and its table (docs/analysis.md, "Modality value")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from missbench.report.load import Store
from missbench.report.model import Cell, Pool, Row, Table, canonical_subsets, describe, fmt, natural_key, seeds_text
from missbench.report.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, MIN_CI_CASES, bootstrap_mean_ci
from missbench.report.tables import REGIONS, Skip, et_text, policy_text, runs_by, seg_values

#: Default margin (score points: Dice or accuracy in %) by which adding a modality must lower a case's score to be a violation.
MARGIN = 1.0
#: The measures, in table order: key and name.
MEASURES = (("marginal", "marginal contribution"), ("shapley", "Shapley value"), ("violations", "violation rate (%)"))


def shapley_weight(size: int, n: int) -> float:
    """Shapley's weight of a coalition of ``size`` players out of ``n``: |S|! (n - |S| - 1)! / n!."""
    return math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)


def case_values(d: pd.DataFrame, mods: tuple[str, ...], empty: float, margin: float) -> pd.DataFrame:
    """Per (variant, region, case): for each modality q, the marginal gain score(S + q) - score(S) and its violation
    flag (gain < -margin; NaN where a score is missing) per non-empty S without q (column: S's label), and the Shapley
    value of q (column ''; v(empty) = ``empty``; NaN unless the case has every subset). Pairs are formed within one run
    (one model: a seed), then averaged over the runs that score the case.

    ``d``: columns variant, region, run_id, case_id, eval_subset, value (score points)."""
    wide = d.groupby(["variant", "region", "run_id", "case_id", "eval_subset"], sort=True).value.mean().unstack("eval_subset")
    missing = pd.Series(np.nan, index=wide.index)

    def score(members: frozenset[str]) -> pd.Series:
        label = "+".join(m for m in mods if m in members)
        return wide[label] if label in wide else missing

    entries: dict[tuple[str, str, str], pd.Series] = {}
    n = len(mods)
    for q in mods:
        others = [m for m in mods if m != q]
        shapley = pd.Series(0.0, index=wide.index)
        for size in range(n):
            for members in map(frozenset, combinations(others, size)):
                base = score(members) if members else pd.Series(empty, index=wide.index)
                gain = score(members | {q}) - base
                shapley = shapley + shapley_weight(size, n) * gain
                if members:
                    label = "+".join(m for m in mods if m in members)
                    entries[(q, "marginal", label)] = gain
                    entries[(q, "violations", label)] = (gain < -margin).astype(float).where(gain.notna()) * 100
        entries[(q, "shapley", "")] = shapley
    frame = pd.DataFrame(entries)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["modality", "measure", "subset"])
    return frame.groupby(level=["variant", "region", "case_id"], sort=True).mean()


def summarise_values(values: pd.DataFrame, mods: tuple[str, ...]) -> pd.DataFrame:
    """Per (variant, region, modality, measure): the mean over S of the mean over cases of a `case_values` frame, the
    number of cases and pairs S it rests on, and its 95% percentile bootstrap CI over cases (every case of the pool in
    one order, so each call draws the same resampled cases: pairs, subsets, modalities and methods stay matched)."""
    cases = sorted(values.index.get_level_values("case_id").unique())
    out = []
    for (variant, region), block in values.groupby(level=["variant", "region"], sort=False):
        block = block.droplevel(["variant", "region"]).reindex(cases)
        for q in mods:
            for measure, _ in MEASURES:
                m = block.xs((q, measure), axis=1, level=["modality", "measure"], drop_level=False).dropna(axis=1, how="all").to_numpy(float)
                n_cases = int(np.isfinite(m).any(axis=1).sum()) if m.size else 0
                point = float(np.nanmean(np.nanmean(m, axis=0))) if n_cases else math.nan
                lo, hi = bootstrap_mean_ci(m) if n_cases > 1 else (math.nan, math.nan)
                out.append({"variant": variant, "region": region, "modality": q, "measure": measure, "value": point,
                            "ci_low": lo, "ci_high": hi, "n_cases": n_cases, "n_pairs": m.shape[1] if measure != "shapley" else 0,
                            "printed": n_cases >= MIN_CI_CASES and math.isfinite(lo)})
    return pd.DataFrame(out)


def pool_scores(pool: Pool, store: Store, et_region: str = "ET") -> tuple[pd.DataFrame, float, str]:
    """A pool's per-case scores in points (columns variant, region, run_id, case_id, eval_subset, value), the score
    of the empty subset and the unit's name. Segmentation: Dice (%) per region, v(empty) = 0. Classification: 100 x
    correct per test sample scored on a fixed subset, v(empty) = the chance level 100 / classes; the variant names
    the missing rate where the pool has several. Skip for dedicated pools and rows without a subset lattice."""
    if pool.mode == "dedicated":
        raise Skip("dedicated models are each scored on their own subset only: no model has a subset and its superset")
    rows = pool.rows(store)
    if len(rows) and "correct" in set(rows.metric):
        d = rows[(rows.metric == "correct") & (rows.condition == rows.eval_subset)]
        if d.empty:
            raise Skip("no test sample scored on a fixed subset (the slots scheme scores each under its own mask)")
        classes = len(d.prob.iloc[0])
        rated = d.missing_rate.nunique() > 1
        variant = d.column + (" r=" + d.missing_rate.map("{:g}".format) if rated else "")
        d = d.assign(variant=variant, region="", value=d.value * 100)
        return d, 100.0 / classes, f"accuracy points; v(∅) = the chance level 100/{classes} %"
    d = seg_values(pool, store, "dice", et_region)
    return d.assign(variant=d.column), 0.0, "Dice points (%); v(∅) = 0 Dice"


@dataclass(frozen=True)
class ModalityValue:
    """A pool's modality values: the `summarise_values` frame, the modalities in data set order, the unit's text and
    each variant's runs."""

    summary: pd.DataFrame
    modalities: tuple[str, ...]
    unit: str
    runs: dict[str, tuple[str, ...]]

    @property
    def segmentation(self) -> bool:
        return self.unit.startswith("Dice")


def modality_values(pool: Pool, store: Store, et_region: str = "ET", margin: float = MARGIN) -> ModalityValue:
    """The pool's modality values, made once per pool, store and margin (the table and the figure share them). Skip
    when no model scores a subset and that subset plus one modality."""
    def make() -> ModalityValue:
        d, empty, unit = pool_scores(pool, store, et_region)
        subsets = canonical_subsets(d)
        mods = subsets[0].all_modalities
        if not any(len(t) == len(s) + 1 and set(s.modalities) < set(t.modalities) for s in subsets for t in subsets):
            raise Skip(f"no subset is scored beside itself plus one modality (scored: {', '.join(s.label for s in subsets)})")
        return ModalityValue(summarise_values(case_values(d, mods, empty, margin), mods), mods, unit, runs_by(d, ["variant"]))
    return pool.cached(store, ("modality", et_region, margin), make)


def modality_table(pool: Pool, store: Store, et_region: str = "ET", margin: float = MARGIN) -> Table:
    """Per method (x region) and modality: marginal contribution, Shapley value and violation rate, each beside its
    95% paired case-bootstrap CI."""
    mv = modality_values(pool, store, et_region, margin)
    summary, mods, unit, seg = mv.summary, mv.modalities, mv.unit, mv.segmentation
    variants = sorted(set(summary.variant), key=natural_key)
    regions = REGIONS if seg else ("",)
    at = summary.set_index(["variant", "region", "modality", "measure"])
    out = []
    for i, v in enumerate(variants):
        for j, region in enumerate(regions):
            for k, q in enumerate(mods):
                cells = []
                for measure, _ in MEASURES:
                    s = at.loc[(v, region, q, measure)]
                    behind = mv.runs.get(v, ())
                    cells += [Cell(float(s.value), fmt(float(s.value), 2), round(float(s.value), 2), runs=behind),
                              Cell(text=f"[{fmt(float(s.ci_low), 2)}, {fmt(float(s.ci_high), 2)}]" if s.printed
                                   else f"n={int(s.n_cases)}", runs=behind)]
                labels = [v, region, q] if seg else [v, q]
                out.append(Row(" ".join(x for x in labels if x), labels, cells, (i or j) > 0 and k == 0))
    pairs = 2 ** (len(mods) - 1) - 1
    caption = [f"Modality value: what adding each modality does to a model's score, from its stored per-case scores (no "
               f"training); {describe(pool)}; {seeds_text(pool, store)}"
               + (f"; {policy_text(pool)}; {et_text(et_region, pool)}." if seg else ".") + f" Units: {unit}.",
               f"Marginal: the mean over the {pairs} non-empty subset{'s' if pairs > 1 else ''} S without q (those whose S and S + q "
               f"were both scored) of score(S + q) − score(S), each pair on the same case by the same model; S = ∅ is left out (the empty subset is "
               f"not scored). Shapley: Σ over S ⊆ M∖q of |S|!(|M| − |S| − 1)!/|M|! × (v(S + q) − v(S)), ∅ included at the "
               f"v(∅) above, so a method's values over the modalities sum to v(all) − v(∅); '-' unless every subset was scored.",
               f"Violations: the share (%) of pairs (case, S) where adding q lowers the case's score by more than {margin:g} "
               f"point{'' if margin == 1 else 's'} (make_tables --margin).",
               "Per case: pairs within each seed's model, then the mean over seeds; then the mean over cases (and over S). "
               f"95% CI: percentile bootstrap over cases ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}; the same "
               f"resampled cases for every subset, modality and method, so pairs stay matched), printed with at least "
               f"{MIN_CI_CASES} cases, else withheld (n=cases)."]
    columns = [(name, h) for _, name in MEASURES for h in ("mean", "95% CI")]
    extras = {"values": summary.sort_values(["variant", "region", "modality", "measure"], kind="stable").reset_index(drop=True)}
    return Table(f"modality_{pool.name}", " ".join(caption), ["method", "region", "modality"] if seg else ["method", "modality"],
                 columns, out, pool.used, list(pool.left_out), list(pool.notes), extras,
                 title=f"Modality value (marginal contribution, Shapley, violations): {pool.name}")
