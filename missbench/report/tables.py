"""Table builders: the 15-row Dice / HD95 tables, classification scores, dedicated vs non-dedicated gaps,
the DAO-loss ablation, timing (one table per budget) and run costs. Each takes pooled runs (`model.Pool`)
and returns a `model.Table` that says which runs it used and which it left out, and why."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from missbench.report.load import Store
from missbench.report.model import (Cell, Pool, Row, Table, bold_best, canonical_subsets, describe, differences, fmt,
                                    note_counts, pools, presence_labels, seeds_text, show, stat_cell)
from missbench.report.published import Published, brats_protocol, one_protocol, published_average
from missbench.report.weights import declared_weights
from missbench.report.stats import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, MIN_CI_CASES, bootstrap_mean_ci, compare_with_best,
                                    significant, smallest_wilcoxon_p)

REGIONS = ("ET", "TC", "WT")
#: Significance level of the marked Wilcoxon tests (after Holm).
ALPHA = 0.05
MARK = "†"


@dataclass(frozen=True)
class MetricStyle:
    """How a segmentation metric is shown: scale, digits, direction and its name in captions."""

    name: str
    scale: float
    digits: int
    higher_is_better: bool


METRICS = {"dice": MetricStyle("Dice (%)", 100.0, 2, True), "hd95": MetricStyle("HD95 (mm)", 1.0, 2, False)}


class Skip(Exception):
    """A table or figure cannot be made from these runs; the message says why (printed, not fatal)."""


def seg_values(pool: Pool, store: Store, metric: str, et_region: str = "ET") -> pd.DataFrame:
    """The pool's rows of one metric for ET (raw or ETpp, shown as ET), TC and WT, in display units; a
    dedicated protocol's models only on their own training subset (one model per row). Made once per pool
    and store: the tables and figures of a pool share it (and must not change it)."""
    return pool.cached(store, ("seg_values", metric, et_region), lambda: _seg_values(pool, store, metric, et_region))


def _seg_values(pool: Pool, store: Store, metric: str, et_region: str) -> pd.DataFrame:
    d = pool.rows(store)
    if d.empty:
        raise Skip(f"no {metric} rows for regions {et_region}, TC, WT")
    d = d[(d.metric == metric) & d.region.isin([et_region, "TC", "WT"])]
    if pool.mode == "dedicated":
        d = d[d.eval_subset == d.train_subset]
    if d.empty:
        raise Skip(f"no {metric} rows for regions {et_region}, TC, WT")
    d = d.assign(region=d.region.replace({et_region: "ET"}), value=d.value * METRICS[metric].scale)
    return d


def summarise(d: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per ``keys``: the mean over cases per seed, then mean, std (ddof 1; NaN with one seed) and number
    of seeds over seeds, and the number of cases with a value."""
    per_seed = d.groupby([*keys, "seed"], sort=True).value.mean()
    out = per_seed.groupby(level=keys, sort=True).agg(["mean", "std", "count"]).rename(columns={"count": "seeds"})
    out["cases"] = d.dropna(subset=["value"]).groupby(keys, sort=True).case_id.nunique()
    return out.fillna({"cases": 0})


def cells_of(summary: pd.DataFrame, keys: list[tuple], digits: int) -> list[Cell]:
    """Cells 'mean ± std' of ``keys`` of a `summarise` frame ('-' where a key has no rows)."""
    out = []
    for k in keys:
        if k in summary.index:
            s = summary.loc[k]
            out.append(stat_cell(float(s["mean"]), float(s["std"]), digits, int(s["seeds"]), int(s["cases"])))
        else:
            out.append(Cell())
    return out


def runs_by(d: pd.DataFrame, keys: list[str]) -> dict[Any, tuple[str, ...]]:
    """The run ids behind each value of ``keys`` in rows ``d`` (sorted), for linking a cell to its runs."""
    if d.empty:
        return {}
    return {k: tuple(sorted(v)) for k, v in d.groupby(keys, sort=True).run_id.unique().items()}


def column_runs(pool: Pool) -> dict[str, tuple[str, ...]]:
    """Each column label's runs."""
    return {c.label: c.runs for c in pool.columns}


def per_case(d: pd.DataFrame) -> pd.DataFrame:
    """Seed-averaged score per (column, eval_subset, region, case): the unit of the paired tests."""
    return d.groupby(["column", "eval_subset", "region", "case_id"], sort=True).value.mean().reset_index()


def et_text(et_region: str, pool: Pool) -> str:
    if et_region == "ETpp":
        return f"ET post-processed (a predicted ET below {pool.policy.get('et_threshold', '?')} voxels counts as empty)"
    return "ET without post-processing"


def policy_text(pool: Pool) -> str:
    policy = pool.policy.get("empty", "?")
    rule = {"one": "both empty scores Dice 1, HD95 0", "nan": "both empty is left out (NaN)"}.get(
        str(policy), "see missbench/core/metrics.py")
    return f"empty-region policy '{policy}' ({rule})"


def seg_table(pool: Pool, store: Store, metric: str, et_region: str = "ET", published: list[Published] | None = None) -> Table:
    """The papers' 15-row table for one metric: presence columns, ET | TC | WT blocks, Avg and its CI.

    Cells: mean over cases per seed, then mean ± std over seeds. Bold: the best displayed value per row
    and region. Mark: the paired Wilcoxon test against the best (the best: against the runner-up),
    Holm-corrected over the table's distinct tests, has p < ALPHA. ``published``: columns of published
    numbers (Dice only) shown beside the measured ones, outside bold, tests and CIs.
    """
    style = METRICS[metric]
    d = seg_values(pool, store, metric, et_region)
    subsets = canonical_subsets(d)
    labels = [s.label for s in subsets]
    variants = [c.label for c in pool.columns if c.label in set(d.column)]
    published = published or []
    summary = summarise(d, ["column", "eval_subset", "region"])
    cases = per_case(d)
    behind, of_column = runs_by(d, ["column", "eval_subset"]), column_runs(pool)
    tests = compare_with_best(cases.rename(columns={"column": "variant"}), style.higher_is_better)
    marked = significant(tests, ALPHA)
    columns = [(reg, v) for reg in REGIONS for v in [*variants, *(p.label for p in published)]]

    def region_blocks(measured: list[Cell], pub: list[Cell]) -> list[Cell]:
        """Measured cells (region-major) and published ones interleaved per region; bold among measured only."""
        out = []
        for i, _ in enumerate(REGIONS):
            block = measured[i * len(variants):(i + 1) * len(variants)]
            out += bold_best(block, style.higher_is_better) + pub[i * len(published):(i + 1) * len(published)]
        return out

    out_rows, prev, counted = [], None, []
    for s in subsets:
        cells = cells_of(summary, [(v, s.label, reg) for reg in REGIONS for v in variants], style.digits)
        for c, (reg, v) in zip(cells, [(reg, v) for reg in REGIONS for v in variants]):
            c.mark = MARK if (s.label, reg, v) in marked else ""
            c.runs = behind.get((v, s.label), ())
        counted += cells
        pub = [published_cell(p.dice.get(reg, {}).get(s.label)) for reg in REGIONS for p in published]
        out_rows.append(Row(s.label, presence_labels(s.mask), region_blocks(cells, pub), prev is not None and len(s) != prev))
        prev = len(s)
    per_seed = d.groupby(["column", "region", "seed", "eval_subset"], sort=True).value.mean()
    complete = per_seed.groupby(level=["column", "region", "seed"]).count() == len(labels)
    seed_avg = per_seed.groupby(level=["column", "region", "seed"]).mean()[complete]
    avg_cells = []
    for reg in REGIONS:
        for v in variants:
            values = [summary.loc[(v, s, reg), "mean"] for s in labels if (v, s, reg) in summary.index]
            if len(values) < len(labels):
                avg_cells.append(Cell(text="-"))
                continue
            mean = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
            seeds = seed_avg.loc[(v, reg)] if (v, reg) in seed_avg.index else pd.Series(dtype=float)
            avg_cells.append(stat_cell(mean, float(seeds.std()) if len(seeds) > 1 else math.nan, style.digits, len(seeds),
                                       int(cases[(cases.column == v) & (cases.region == reg)].case_id.nunique())))
            avg_cells[-1].runs = of_column.get(v, ())
    counted += avg_cells
    blank = [""] * (len(subsets[0].mask) - 1)
    pub_avg = [published_cell(published_average(p, reg)) for reg in REGIONS for p in published]
    out_rows.append(Row("Avg", ["Avg", *blank], region_blocks(avg_cells, pub_avg), True))
    weights, weights_note = declared_weights(pool.protocol)
    if weights is not None:
        w = pd.Series({label: weights.of(label) for label in labels})
        weighted = []
        for reg in REGIONS:
            for v in variants:
                means = pd.Series({s: summary.loc[(v, s, reg), "mean"] for s in labels if (v, s, reg) in summary.index})
                if len(means) < len(labels):
                    weighted.append(Cell(text="-"))
                    continue
                # seeds that scored every subset, as for Avg
                seeds = weighted_mean(per_seed.loc[(v, reg)].unstack("eval_subset").reindex(columns=labels).dropna(), w)
                weighted.append(stat_cell(float(weighted_mean(means.to_frame().T, w).iloc[0]),
                                          float(seeds.std()) if len(seeds) > 1 else math.nan, style.digits, len(seeds),
                                          int(cases[(cases.column == v) & (cases.region == reg)].case_id.nunique())))
                weighted[-1].runs = of_column.get(v, ())
        counted += weighted
        out_rows.append(Row("Weighted Avg", ["Weighted Avg", *blank],
                            region_blocks(weighted, [Cell(text="")] * (len(REGIONS) * len(published)))))
    ci_cells, ci_frame = [], []
    for reg in REGIONS:
        for v in variants:
            m = cases[(cases.column == v) & (cases.region == reg)].pivot_table(
                index="case_id", columns="eval_subset", values="value", dropna=False).reindex(columns=labels)
            lo, hi = bootstrap_mean_ci(m.to_numpy()) if len(m) > 1 else (math.nan, math.nan)
            shown = len(m) >= MIN_CI_CASES and math.isfinite(lo)
            ci_cells.append(Cell(text=f"[{fmt(lo, style.digits)}, {fmt(hi, style.digits)}]" if shown else f"n={len(m)}",
                                 runs=of_column.get(v, ())))
            ci_frame.append({"region": reg, "variant": v, "ci_low": lo, "ci_high": hi, "n_cases": len(m), "printed": shown})
        ci_cells += [Cell(text="")] * len(published)
    out_rows.append(Row("Avg 95% CI", ["95% CI", *blank], ci_cells, in_csv=False))
    n_cases = int(cases.case_id.nunique())
    caption = [f"{style.name} per modality subset; {describe(pool)}; {seeds_text(pool, store)}; {policy_text(pool)}; "
               f"{et_text(et_region, pool)}."]
    if pool.mode == "dedicated":
        caption.append("One dedicated model per subset, trained and scored on that subset.")
    caption.append("Per case, then the mean over cases per seed, then mean ± std over seeds (no std with one seed). "
                   + note_counts(counted) + " ● available, ○ missing.")
    if len(variants) > 1:
        caption.append(f"Bold: best displayed value per row and region ({'highest' if style.higher_is_better else 'lowest'}).")
    if len(tests):
        caption.append(f"{MARK}: differs from the best method of that row and region (the best: from the runner-up); paired "
                       f"Wilcoxon signed-rank test over seed-averaged cases, two-sided, Holm-corrected over the {len(tests)} "
                       f"distinct tests of this table, p < {ALPHA}.")
        if smallest_wilcoxon_p(n_cases) >= ALPHA:
            caption.append(f"With {n_cases} cases no such test can reach p < {ALPHA} (smallest possible p = "
                           f"{smallest_wilcoxon_p(n_cases):.3g}), so no {MARK} can appear.")
    caption.append(f"Avg: unweighted mean over the {len(subsets)} subsets (- where a column lacks a subset); 95% CI: "
                   f"percentile bootstrap over patients ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}; a resampled "
                   f"patient keeps all its subsets), printed only with at least {MIN_CI_CASES} cases, else withheld (n=cases).")
    if weights is not None:
        caption.append(f"Weighted Avg: the subsets weighted as protocol {pool.protocol}'s file declares them, read when this "
                       f"table was made (per seed, then mean ± std over seeds): {weights.describe()}.")
    elif weights_note:
        caption.append(weights_note.rstrip(".") + ".")
    if published:
        caption.append(published_caption(published, et_region))
    extras = {"tests": tests.sort_values(["eval_subset", "region", "variant"], kind="stable").reset_index(drop=True),
              "ci": pd.DataFrame(ci_frame)}
    return Table(f"{metric}_{pool.name}", " ".join(caption), list(subsets[0].all_modalities), columns, out_rows, pool.used,
                 list(pool.left_out), list(pool.notes), extras, key_name="subset",
                 title=f"{style.name} per modality subset: {pool.name}")


def weighted_mean(frame: pd.DataFrame, weights: pd.Series) -> pd.Series:
    """Per row of ``frame`` (columns: subsets), the mean weighted by ``weights``, renormalised over its finite
    values (a subset whose score is NaN, such as an empty region under the 'nan' policy, drops out)."""
    values = frame.to_numpy(dtype=float)
    w = np.broadcast_to(weights.reindex(frame.columns).to_numpy(dtype=float), values.shape)
    finite = np.isfinite(values)
    total = np.where(finite, w, 0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.Series(np.where(finite, values * w, 0).sum(axis=1) / total, index=frame.index)


def published_cell(value: float | None) -> Cell:
    """A published number (two decimals, as printed in the papers); '-' where the paper gives none."""
    if value is None or not math.isfinite(value):
        return Cell()
    return Cell(value, f"{value:.2f}", round(value, 2))


def published_caption(published: list[Published], et_region: str) -> str:
    """What the published columns are, where they come from, and how their ET may differ from the measured one."""
    sources = sorted({f"{p.label}: {p.citation}; {p.split}; ET {p.et}" for p in published})
    et = " Measured ET here is without post-processing (make_tables --et ETpp: post-processed)." if et_region == "ET" else ""
    return (f"Columns marked (published) are numbers reported in papers for BraTS2018 protocol {published[0].protocol}, "
            f"not measured here; they take no part in bold, tests or CIs. Sources: {'; '.join(sources)}.{et}")


# --- classification --------------------------------------------------------------------------------

CLASSIFICATION_SCORES = (("accuracy", "Accuracy (%)"), ("f1_micro", "F1-micro (%)"), ("f1_macro", "F1-macro (%)"),
                         ("auc_macro_ovr", "AUC (%)"))


def classification_table(pool: Pool, store: Store) -> Table:
    """Accuracy, F1-micro, F1-macro and AUC per missing rate (named for what it is) and evaluation condition."""
    from missbench.core.metrics import classification_scores  # the one definition of the scores

    d = pool.rows(store)
    d = d[d.metric == "correct"]
    if d.empty:
        raise Skip("no classification rows (metric 'correct')")
    scheme = pool.setting.get("missing.scheme")
    rated = scheme is not None and d.missing_rate.notna().any()
    conditions = sorted(d.condition.unique(), key=lambda c: (c != "masks", d[d.condition == c].eval_code.iloc[0]))
    keys = ["missing_rate", "condition"] if rated else ["condition"]
    scores = [{"column": v, "seed": s, **dict(zip(keys, k)), **classification_scores(g), "runs": tuple(sorted(g.run_id.unique()))}
              for (v, s, *k), g in d.groupby(["column", "seed", *keys], sort=True)]
    frame = pd.DataFrame(scores)
    variants = [c.label for c in pool.columns if c.label in set(frame.column)]
    row_keys = sorted(frame[keys].drop_duplicates().itertuples(index=False, name=None),
                      key=lambda k: (k[0], conditions.index(k[1])) if rated else (conditions.index(k[0]),))
    names, label_of = rate_labels(pool, store, d) if rated else (["condition"], lambda k: [str(k[-1])])
    if rated and len(conditions) > 1:
        names.append("condition")
    columns = [(name, v) for _, name in CLASSIFICATION_SCORES for v in variants]
    out, counted = [], []
    for k in row_keys:
        sel = frame[np.logical_and.reduce([frame[c] == x for c, x in zip(keys, k)])]
        cells = []
        for score, _ in CLASSIFICATION_SCORES:
            summary = sel.assign(value=sel[score] * 100).groupby("column").agg(mean=("value", "mean"), std=("value", "std"),
                                                                                 seeds=("value", "count"), cases=("n", "max"))
            block = cells_of(summary, variants, 2)
            for c, v in zip(block, variants):
                c.runs = tuple(sorted({r for runs in sel[sel.column == v].runs for r in runs}))
            cells += bold_best(block, True)
            counted += block
        row_labels = label_of(k) + ([str(k[1])] if rated and len(conditions) > 1 else [])
        out.append(Row(" ".join(map(show, k if len(conditions) > 1 else k[:-1] or k)), row_labels, cells))
    caption = [f"Classification on {describe(pool)}; {seeds_text(pool, store)}: accuracy, F1-micro (single-label: equals "
               f"accuracy), F1-macro and macro one-vs-rest AUC on the test split, per seed over all test samples, then mean ± "
               f"std over seeds. " + note_counts(counted, "test samples")]
    caption.append(rate_caption(pool, conditions) if rated else "Rows: the available modalities at test time.")
    if len(variants) > 1:
        caption.append("Bold: best displayed value per row and score.")
    return Table(f"classification_{pool.name}", " ".join(caption), names, columns, out, pool.used, list(pool.left_out),
                 list(pool.notes), title=f"Classification scores per {'missing rate' if rated else 'condition'}: {pool.name}")


def rate_labels(pool: Pool, store: Store, d: pd.DataFrame) -> tuple[list[str], Any]:
    """Row label names and a row key -> labels function for a missing-rate protocol: the rate by what it
    means and, for the slots scheme, the realised share of missing slots (meta.json missing_share)."""
    if pool.setting.get("missing.scheme") == "modality_rate":
        modality = pool.setting.get("missing.modality", "?")
        return [f"r (share of training samples with {modality})"], lambda k: [f"{k[0]:g}"]
    runs = d.drop_duplicates("run_id")
    shares = {split: runs.groupby("missing_rate").run_id.agg(
        lambda ids: np.mean([store.runs[r].meta.get("missing_share", {}).get(split, math.nan) for r in ids]))
        for split in ("train", "test")}
    return (["p (slot-missing probability)", "realised share, train", "realised share, test"],
            lambda k: [f"{k[0]:g}", fmt(shares["train"].get(k[0], math.nan), 3), fmt(shares["test"].get(k[0], math.nan), 3)])


def rate_caption(pool: Pool, conditions: list[str]) -> str:
    """What the rate of a missing-rate protocol means, and how the test samples were scored."""
    if pool.setting.get("missing.scheme") == "modality_rate":
        modality = pool.setting.get("missing.modality", "?")
        return (f"r: the share of training samples that have {modality} (the other modalities are always present); "
                f"tested on {', '.join(c for c in conditions if c != 'masks')} only.")
    return ("p: the probability that a (sample, modality) slot is missing, in training and test alike; a sample never "
            "loses every modality, so the realised share of missing slots (meta.json missing_share, mean over runs) is "
            "below p. Each test sample is scored once with its own mask.")


# --- dedicated vs non-dedicated, DAO ablation ------------------------------------------------------

def gap_reference(ded: Pool, pools: list[Pool]) -> Pool:
    """The non-dedicated pool a dedicated one is compared with: same data set, budget and settings but for
    protocol and mode; protocol non_dedicated first, else the first by name."""
    ignore = {"protocol", "mode"}
    same = [p for p in pools if p.mode == "non_dedicated" and p.dataset == ded.dataset and p.budget == ded.budget
            and not set(differences(ded.setting, p.setting)) - ignore]
    if not same:
        raise Skip("no non-dedicated runs with the same data set, budget and settings")
    return min(same, key=lambda p: (p.protocol != "non_dedicated", p.name))


def gap_table(ded: Pool, nd: Pool, store: Store, et_region: str = "ET") -> Table:
    """Dedicated (one model per subset, scored on it) vs non-dedicated Dice per subset, and the gap: per
    region and method three columns (dedicated, non-dedicated, gap), a row per dedicated subset and Avg."""
    variants = [c.label for c in ded.columns if c.label in {c.label for c in nd.columns}]
    if not variants:
        raise Skip(f"no column of {ded.name} has non-dedicated runs in {nd.name}")
    dd, dn = seg_values(ded, store, "dice", et_region), seg_values(nd, store, "dice", et_region)
    dd, dn = dd[dd.column.isin(variants)], dn[dn.column.isin(variants)]
    subsets = canonical_subsets(dd)
    labels = [s.label for s in subsets]
    sd, sn = (summarise(x[x.eval_subset.isin(labels)], ["column", "eval_subset", "region"]) for x in (dd, dn))
    kinds = (("dedicated", "ded."), ("non-dedicated", "non-ded."), ("gap", "gap"))
    columns = [(reg, f"{v} {short}") for reg in REGIONS for v in variants for _, short in kinds]

    def mean(summary: pd.DataFrame, v: str, reg: str, subset_labels: list[str]) -> float:
        """The mean over ``subset_labels`` of the cell means (NaN where one is missing)."""
        m = [float(summary.loc[(v, s, reg), "mean"]) if (v, s, reg) in summary.index else math.nan for s in subset_labels]
        return float(np.mean(m))

    out = []
    behind_d, behind_n = runs_by(dd, ["column", "eval_subset"]), runs_by(dn, ["column", "eval_subset"])
    for key, row_labels, subset_labels in [*((s.label, presence_labels(s.mask), [s.label]) for s in subsets),
                                           ("Avg", ["Avg"] + [""] * (len(subsets[0].mask) - 1), labels)]:
        cells = []
        for reg in REGIONS:
            for v in variants:
                a, b = mean(sd, v, reg, subset_labels), mean(sn, v, reg, subset_labels)
                ra = tuple(sorted({r for s in subset_labels for r in behind_d.get((v, s), ())}))
                rb = tuple(sorted({r for s in subset_labels for r in behind_n.get((v, s), ())}))
                cells += [Cell(a, fmt(a, 2), round(a, 2), runs=ra), Cell(b, fmt(b, 2), round(b, 2), runs=rb),
                          Cell(a - b, f"{a - b:+.2f}" if math.isfinite(a - b) else "-", round(a - b, 2), runs=tuple(sorted({*ra, *rb})))]
        out.append(Row(key, row_labels, cells, key == "Avg"))
    caption = (f"Dedicated vs non-dedicated training, Dice (%) on each dedicated model's own subset; dedicated: {describe(ded)}, "
               f"{seeds_text(ded, store)}; non-dedicated: {describe(nd)}, {seeds_text(nd, store)}; {policy_text(ded)}; "
               f"{et_text(et_region, ded)}. Per method: ded. = dedicated, non-ded. = non-dedicated (means over cases, then "
               f"over seeds), gap = dedicated − non-dedicated (Dice points; positive: the dedicated model is better).")
    return Table(f"gap_{ded.name}", caption, list(subsets[0].all_modalities), columns, out, sorted(ded.used + nd.used),
                 [*ded.left_out, *nd.left_out], [*ded.notes, *nd.notes], key_name="subset",
                 title=f"Dedicated vs non-dedicated Dice (%): {ded.name}")


def dao_losses(pool: Pool, store: Store, subset: str = "T1", et_region: str = "ET") -> tuple[pd.DataFrame, dict[str, str]]:
    """The Dice rows of a DAO-loss ablation, their ``column`` the DAO loss, and each column label's loss; Skip
    unless the runs are one method's and differ in the DAO loss only, and were scored on ``subset``."""
    if len({c.method for c in pool.columns}) != 1:
        raise Skip("the DAO ablation needs the runs of one method")
    params = {c.label: store.resolved_params(c.runs[0]) for c in pool.columns}
    if len({str(p.get("dao")) for p in params.values()}) < 2:
        raise Skip("no runs differing in the DAO loss (protocol dao_loss; runs record their resolved parameters in meta.json)")
    varying = {k for p in params.values() for k in p if len({show(q.get(k)) for q in params.values()}) > 1}
    if varying != {"dao"}:
        raise Skip(f"the runs differ in more than the DAO loss ({', '.join(sorted(varying))})")
    d = seg_values(pool, store, "dice", et_region)
    loss = {label: str(p["dao"]) for label, p in params.items()}
    d = d.assign(column=d.column.map(loss))
    if subset not in set(d.eval_subset):
        raise Skip(f"the DAO runs were not scored on subset {subset}")
    return d, loss


def dao_table(pool: Pool, store: Store, subset: str = "T1", et_region: str = "ET") -> Table:
    """ShaSpec's Table 4: Dice per DAO loss (columns) for ET/TC/WT on ``subset`` and averaged over subsets."""
    d, loss = dao_losses(pool, store, subset, et_region)
    losses = sorted(set(loss.values()))
    s1 = summarise(d[d.eval_subset == subset], ["column", "region"])
    per_seed = d.groupby(["column", "region", "seed", "eval_subset"]).value.mean().groupby(level=["column", "region", "seed"]).mean()
    s2 = per_seed.groupby(level=["column", "region"]).agg(["mean", "std", "count"]).rename(columns={"count": "seeds"})
    s2["cases"] = d.groupby(["column", "region"]).case_id.nunique()
    n = d.eval_subset.nunique()
    out, counted = [], []
    for i, (name, summary) in enumerate(((subset, s1), (f"Avg ({n} subsets)", s2))):
        for j, reg in enumerate(REGIONS):
            cells = cells_of(summary, [(label, reg) for label in losses], 2)
            for c, dao in zip(cells, losses):
                c.runs = tuple(sorted(r for col in pool.columns if loss[col.label] == dao for r in col.runs))
            counted += cells
            out.append(Row(f"{'Avg' if i else subset} {reg}", [name, reg], bold_best(cells, True), i == 1 and j == 0))
    caption = (f"DAO-loss ablation (ShaSpec Table 4), Dice (%), tested with {subset} only and averaged over the {n} evaluation "
               f"subsets; {describe(pool)}; {seeds_text(pool, store)}; {policy_text(pool)}; {et_text(et_region, pool)}. Mean ± std "
               f"over seeds. {note_counts(counted)} Bold: best displayed value per row. Columns: "
               f"{', '.join(f'{loss[c.label]} = {c.label}' for c in pool.columns)}.")
    return Table(f"dao_{pool.name}", caption, ["test", "region"], [("DAO loss", label) for label in losses], out, pool.used,
                 list(pool.left_out), list(pool.notes), title=f"DAO-loss ablation, Dice (%): {pool.name}")


# --- timing and costs --------------------------------------------------------------------------------

#: Memory measures a run records: label, and whether it is per phase (else the process's whole lifetime).
MEMORY_KINDS = {"peak_cuda_allocated_mib": ("CUDA allocated, per phase", True),
                "peak_rss_above_phase_start_mib": ("RSS above the phase's start, per phase", True),
                "peak_process_rss_mib": ("RSS, process lifetime", False),
                "peak_process_rss_mib_lifetime": ("RSS, process lifetime", False)}


def memory_kind(kind: str) -> tuple[str, bool]:
    """(label, per phase) of a memory measure; an unknown one by its name, per phase unless it says lifetime."""
    return MEMORY_KINDS.get(kind, (kind, "lifetime" not in kind))


def count_cell(n: float) -> Cell:
    """An integer with thousands separators ('-' when unknown)."""
    return Cell(n, f"{int(n):,}") if math.isfinite(n) else Cell()


def median_iqr(values: pd.Series, digits: int) -> Cell:
    if values.empty:
        return Cell()
    q1, med, q3 = np.quantile(values.to_numpy(float), [0.25, 0.5, 0.75])
    return Cell(float(med), f"{med:.{digits}f} [{q1:.{digits}f}, {q3:.{digits}f}]")


TIMING_COLUMNS = ("runs", "parameters", "train s/iter", "infer s/case", "train peak MiB", "infer peak MiB", "lifetime peak MiB",
                  "memory measure", "device", "torch", "shared device")


def timing_table(pool: Pool, store: Store) -> Table:
    """One budget's timing runs (one row per column: seeds pooled): parameters, train s/iteration and
    inference s/case (median [IQR] over every timed step), peak memory per phase where it was measured
    per phase (else the process's lifetime peak, in its own column), device, torch, shared-device flag."""
    d = pool.rows(store)
    if d.empty or pool.mode != "timing":
        raise Skip("no timing runs (run: python bench.py --protocol timing --methods ...)")
    out = []
    for col in pool.columns:
        g = d[d.run_id.isin(col.runs)]
        metas = [store.runs[r].meta for r in col.runs]

        def metric(name: str, phase: str | None = None) -> pd.Series:
            return g[(g.metric == name) & ((g.region == phase) if phase else True)].value

        kinds = sorted(set(g.memory_kind)) if "memory_kind" in g else ["-"]
        label, per_phase = memory_kind(kinds[0]) if len(kinds) == 1 else (", ".join(kinds), False)
        peaks = [float(metric("peak_mem_mib", phase).max()) if len(metric("peak_mem_mib", phase)) else math.nan
                 for phase in ("train", "infer")]
        memory = ([Cell(p, fmt(p, 0)) for p in peaks] + [Cell()] if per_phase
                  else [Cell(), Cell(), Cell(max(peaks), fmt(max(peaks), 0))])
        shared = any(bool(m.get("timing", {}).get("shared_device")) for m in metas)
        devices = sorted({f"{m.get('device', '-')} ({m['device_name']})" if m.get("device_name") else str(m.get("device", "-"))
                          for m in metas})
        cells = [Cell(float(len(col.runs)), str(len(col.runs))),
                 count_cell(float(metric("parameters").iloc[0]) if len(metric("parameters")) else math.nan),
                 median_iqr(metric("train_s_per_iter"), 4), median_iqr(metric("infer_s_per_case"), 4), *memory,
                 Cell(text=label), Cell(text=", ".join(devices)),
                 Cell(text=", ".join(sorted({str(m.get("versions", {}).get("torch", "-")) for m in metas}))),
                 Cell(float(shared), "yes" if shared else "no")]
        for c in cells:
            c.runs = col.runs
        out.append(Row(col.label, [col.label], cells))
    counts = {k.split(".")[-1]: v for k, v in pool.setting.items() if k.startswith("timing.")}
    caption = (f"Timing and memory, {describe(pool)}; {seeds_text(pool, store)}: one method at a time; {counts.get('warmup', '?')} "
               f"warm-up then {counts.get('iterations', '?')} timed training iterations (forward, backward, optimiser step; data "
               f"sampling excluded) and {counts.get('inference_warmup', '?')} warm-up then {counts.get('inference_passes', '?')} "
               f"timed inference passes with every modality (segmentation: sliding-window prediction of one test case; "
               f"classification: one batch of test samples); median [IQR] over the timed steps of all runs of a row; device "
               f"synchronised around each timed step. One table per budget: every row has the batch and patch above. Peak "
               f"memory per phase only where it was measured per phase (memory measure); a process's lifetime peak RSS "
               f"includes everything the process did before and is shown in its own column. 'shared device': the load "
               f"average exceeded the cores available, or other processes held GPU memory, so the timing is not comparable.")
    stem = "timing_" + pool.name.removeprefix("timing_")  # the timing protocol's tables: timing_<dataset>_<budget>
    return Table(stem, caption, ["method"], [("", n) for n in TIMING_COLUMNS], out, pool.used,
                 list(pool.left_out), list(pool.notes), title=f"Timing and memory: {pool.name}")


def timing_values(pool: Pool, store: Store) -> pd.DataFrame:
    """Per column of a timing pool (index: its label): median, first and third quartile of train s/iteration and
    inference s/case over every timed step, the peak memory (the larger phase's) and its measure."""
    d = pool.rows(store)
    if d.empty or pool.mode != "timing":
        raise Skip("no timing runs (run: python bench.py --protocol timing --methods ...)")
    out = {}
    for col in pool.columns:
        g = d[d.run_id.isin(col.runs)]
        row: dict[str, Any] = {}
        for key, metric in (("train", "train_s_per_iter"), ("infer", "infer_s_per_case")):
            values = g[g.metric == metric].value.to_numpy(float)
            q1, med, q3 = np.quantile(values, [0.25, 0.5, 0.75]) if len(values) else (math.nan,) * 3
            row |= {key: med, f"{key}_q1": q1, f"{key}_q3": q3}
        peaks = g[g.metric == "peak_mem_mib"].value
        kinds = sorted(set(g.memory_kind)) if "memory_kind" in g else []
        row["memory"] = float(peaks.max()) if len(peaks) else math.nan
        row["memory_measure"] = ", ".join(memory_kind(k)[0] for k in kinds) or "-"
        out[col.label] = row
    return pd.DataFrame.from_dict(out, orient="index")


def cost_table(pools: list[Pool], store: Store) -> Table:
    """What every training run cost, from meta.json: train s/iteration, eval s/case, peak memory, device;
    one row per table column (the runs of one comparability key but the seed)."""
    out, used = [], []
    for pool in pools:
        if pool.mode == "timing":
            continue
        for col in pool.columns:
            metas = [store.runs[r].meta for r in col.runs]
            timings = [m.get("timings", {}) for m in metas]
            memory = [next(iter(sorted(m.get("memory", {}).items())), ("-", math.nan)) for m in metas]
            train = float(np.mean([t.get("train_seconds_per_iteration", math.nan) for t in timings]))
            evals = float(np.mean([t.get("eval_seconds_per_case", math.nan) for t in timings]))
            peak = max((float(mib) for _, mib in memory), default=math.nan)
            params = next((m["parameters"] for m in metas if "parameters" in m), math.nan)
            out.append(Row(f"{pool.name}/{col.label}", [pool.name, col.label], [
                Cell(float(len(col.runs)), str(len(col.runs))), count_cell(float(params)), Cell(train, fmt(train, 4)),
                Cell(evals, fmt(evals, 4)), Cell(peak, fmt(peak, 0)),
                Cell(text=", ".join(sorted({memory_kind(k)[0] for k, _ in memory}))),
                Cell(text=", ".join(sorted({str(m.get("device_name", m.get("device", "-"))) for m in metas})))]))
            for c in out[-1].cells:
                c.runs = col.runs
            used += col.runs
    if not out:
        raise Skip("no training runs")
    caption = ("Cost of the finished training runs, from each run's meta.json, one row per table column: training seconds per "
               "iteration (whole loop: data sampling, checkpoints and logging included) and evaluation seconds per case (all "
               "subsets, scoring included), mean over runs; peak memory: the maximum over runs, of the measure named (a "
               "process's lifetime peak RSS includes the data set and evaluation). For controlled timings see the timing tables.")
    return Table("run_costs", caption, ["table", "column"],
                 [("", n) for n in ("runs", "parameters", "train s/iter", "eval s/case", "peak MiB", "memory measure", "device")],
                 out, sorted(used), title="Cost of the finished training runs (meta.json)")



# --- published numbers beside measured ones --------------------------------------------------------

def subset_average(pool: Pool, store: Store, et_region: str = "ET") -> dict[str, dict[str, Cell]]:
    """Per column and region: Dice (%) averaged over the subsets (per seed, then mean ± std over seeds)."""
    d = seg_values(pool, store, "dice", et_region)
    n = d.eval_subset.nunique()
    per_seed = d.groupby(["column", "region", "seed", "eval_subset"]).value.mean()
    full = per_seed.groupby(level=["column", "region", "seed"]).agg(["mean", "count"])
    full = full[full["count"] == n]["mean"]
    summary = full.groupby(level=["column", "region"]).agg(["mean", "std", "count"])
    return {c.label: {reg: (stat_cell(float(summary.loc[(c.label, reg), "mean"]), float(summary.loc[(c.label, reg), "std"]), 2)
                            if (c.label, reg) in summary.index else Cell()) for reg in REGIONS} for c in pool.columns}


def published_table(entries: list[Published], pools: list[Pool], store: Store, et_region: str = "ET") -> Table:
    """Published averages over the 15 subsets of one BraTS2018 protocol (refuses a mix), with the measured
    averages of this store's runs of that protocol beside them, marked."""
    protocol = one_protocol(entries)
    out, used, left, matched = [], [], [], []
    refs: dict[str, int] = {}  # entries from one source share a note
    for e in entries:
        note = f"{e.citation}; {e.split}; ET: {e.et}; numbers from {e.source}."
        refs.setdefault(note, len(refs) + 1)
        out.append(Row(e.id, [e.label, f"[{refs[note]}]"], [published_cell(e.average[reg]) for reg in REGIONS]))
    for pool in pools:
        if brats_protocol(pool.setting) != protocol or pool.mode == "timing":
            continue
        try:
            averages = subset_average(pool, store, et_region)
        except Skip:
            continue
        for j, (label, cells) in enumerate(averages.items()):
            for c in cells.values():
                c.runs = column_runs(pool).get(label, ())
            out.append(Row(f"{pool.name}/{label}", [f"{label} (measured)", pool.name], list(cells.values()), j == 0))
        used += pool.used
        left += pool.left_out
        matched.append(pool)
    sources = [f"[{i}] {note}" for note, i in refs.items()]
    caption = (f"Published Dice (%) on BraTS2018 protocol {protocol}, averaged over the 15 modality subsets, as printed"
               + (" beside this store's runs of that protocol (measured: mean ± std over seeds)" if used else "")
               + ". Protocol A and B numbers score different cases and never share a table."
               + (f" Measured: {et_text(et_region, matched[0])}." if matched else ""))
    return Table(f"published_{protocol}", caption.strip(), ["method", "source"], [("", r) for r in REGIONS], out, sorted(used),
                 left, sources, title=f"Published Dice (%), BraTS2018 protocol {protocol}, mean over the 15 subsets")


# --- the console: one table per pool ------------------------------------------------------------------

def kind(pool: Pool, store: Store) -> str:
    """What a pool's runs measured: timing, classification or segmentation ('' for no rows)."""
    if pool.mode == "timing":
        return "timing"
    rows = pool.rows(store)
    metrics = set(rows.metric) if len(rows) else set()
    return "classification" if "correct" in metrics else "segmentation" if "dice" in metrics else ""


def console_tables(store: Store) -> list[Table]:
    """The table each pool of runs is summarised by on a console: Dice, classification scores or timing."""
    out = []
    for pool in pools(store):
        build = {"segmentation": lambda: seg_table(pool, store, "dice"), "classification": lambda: classification_table(pool, store),
                 "timing": lambda: timing_table(pool, store)}.get(kind(pool, store))
        try:
            if build:
                out.append(build())
        except Skip:
            continue
    return out
