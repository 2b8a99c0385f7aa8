"""Table builders: the 15-row Dice/HD95 tables, classification scores, dedicated vs non-dedicated gaps,
the DAO-loss ablation, timing and run costs. Each returns a `render.Table` from store rows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import Store, canonical_subsets, natural_key, resolved_params
from analysis.render import Cell, Row, Table, fmt, mean_std_text, presence_labels
from analysis.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, bootstrap_mean_ci, compare_with_best_other
from missbench.core.metrics import classification_scores

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
    """A table or figure cannot be made from this store; the message says why (printed, not fatal)."""


def order_variants(variants: Any) -> list[str]:
    """Variants in a fixed order: by name, numbers inside names compared as numbers."""
    return sorted(set(variants), key=natural_key)


def best_flags(values: list[float], higher_is_better: bool) -> list[bool]:
    """True where a value equals the row's best (ties all bold); NaN never."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return [False] * len(values)
    best = max(finite) if higher_is_better else min(finite)
    return [math.isfinite(v) and math.isclose(v, best, rel_tol=0, abs_tol=1e-9) for v in values]


def seg_values(rows: pd.DataFrame, metric: str, et_region: str) -> pd.DataFrame:
    """Rows of one metric for ET (raw or ETpp, shown as ET), TC and WT, values in display units."""
    d = rows[(rows.metric == metric) & rows.region.isin([et_region, "TC", "WT"])].copy()
    if d.empty:
        raise Skip(f"no {metric} rows for regions {et_region}, TC, WT")
    d["region"] = d.region.replace({et_region: "ET"})
    d["value"] = d.value * METRICS[metric].scale
    return d


def seed_summary(d: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean over cases per seed, then mean, std (ddof 1; NaN with one seed) and seed count over seeds."""
    per_seed = d.groupby([*keys, "seed"], sort=True).value.mean()
    return per_seed.groupby(level=keys, sort=True).agg(["mean", "std", "count"])


def per_case(d: pd.DataFrame) -> pd.DataFrame:
    """Seed-averaged score per (variant, eval_subset, region, case): the unit of the paired tests."""
    return d.groupby(["variant", "eval_subset", "region", "case_id"], sort=True).value.mean().reset_index()


def describe_group(rows: pd.DataFrame, store: Store) -> str:
    """Caption text naming protocol, mode, data set, split, budget (with its size) and seeds."""
    first = store.meta.get(str(rows.run_id.iloc[0]), {})
    b = first.get("spec", {}).get("budget", {})
    patch = f", patch {'x'.join(map(str, b['patch']))}" if b.get("patch") else ""
    size = f" ({b['iterations']} iterations, batch {b['batch']}{patch})" if b else ""
    seeds = sorted(int(s) for s in rows.seed.unique())
    return (f"protocol {rows.protocol.iloc[0]} ({rows['mode'].iloc[0].replace('_', '-')}), data set {rows.dataset.iloc[0]}, "
            f"{rows.split.iloc[0]} split, budget {rows.budget.iloc[0]}{size}, seeds {', '.join(map(str, seeds))}")


def et_text(et_region: str, rows: pd.DataFrame) -> str:
    if et_region == "ETpp":
        return f"ET post-processed (a predicted ET below {int(rows.et_threshold.iloc[0])} voxels counts as empty)"
    return "ET without post-processing"


def policy_text(rows: pd.DataFrame) -> str:
    policy = rows.empty_policy.iloc[0]
    rule = "both empty scores Dice 1, HD95 0" if policy == "one" else "both empty is left out (NaN)"
    return f"empty-region policy '{policy}' ({rule}; exactly one empty: Dice 0, HD95 = volume diagonal)"


def bold_blocks(cells: list[Cell], width: int, higher_is_better: bool) -> list[Cell]:
    """Bold the best cell of each consecutive block of ``width`` cells (a region's methods); returns ``cells``."""
    for start in range(0, len(cells), width):
        block = cells[start:start + width]
        for c, bold in zip(block, best_flags([c.value for c in block], higher_is_better)):
            c.bold = bold
    return cells


def seg_table(rows: pd.DataFrame, store: Store, metric: str, et_region: str = "ET") -> Table:
    """The papers' 15-row table for one metric: presence columns, ET | TC | WT blocks, Avg and its CI.

    Cells: mean over cases per seed, then mean ± std over seeds. Bold: best per row and region.
    A mark: the paired Wilcoxon test against the best other variant (cases, seed-averaged), Holm-corrected
    over all tests of the table, has p < ALPHA.
    """
    style = METRICS[metric]
    d = seg_values(rows, metric, et_region)
    subsets = canonical_subsets(d)
    variants = order_variants(d.variant)
    summary = seed_summary(d, ["variant", "eval_subset", "region"])
    cases = per_case(d)
    tests = compare_with_best_other(cases, style.higher_is_better)
    marked = {(r.eval_subset, r.region, r.variant) for r in tests.itertuples() if r.p_holm < ALPHA}
    columns = [(reg, v) for reg in REGIONS for v in variants]

    out_rows, prev = [], None
    for s in subsets:
        cells = _summary_cells(summary, [(v, s.label, reg) for reg, v in columns], style.digits, None)
        for c, (reg, v) in zip(cells, columns):
            c.mark = MARK if (s.label, reg, v) in marked else ""
        out_rows.append(Row(s.label, presence_labels(s.mask), bold_blocks(cells, len(variants), style.higher_is_better),
                            prev is not None and len(s) != prev))
        prev = len(s)
    labels = [s.label for s in subsets]
    per_seed = d[d.eval_subset.isin(labels)].groupby(["variant", "region", "seed", "eval_subset"], sort=True).value.mean()
    seed_avg = per_seed.groupby(level=["variant", "region", "seed"]).mean()
    avg_means = [float(np.nanmean([r.cells[j].value for r in out_rows])) if any(math.isfinite(r.cells[j].value) for r in out_rows) else math.nan
                 for j in range(len(columns))]
    avg_stds = [float(seed_avg.loc[(v, reg)].std()) if (v, reg) in seed_avg.index else math.nan for reg, v in columns]
    blank = [""] * (len(s.mask) - 1)
    avg_cells = [Cell(m, mean_std_text(m, sd, style.digits)) for m, sd in zip(avg_means, avg_stds)]
    out_rows.append(Row("Avg", ["Avg", *blank], bold_blocks(avg_cells, len(variants), style.higher_is_better), True))
    ci_cells, ci_frame = [], []
    for reg, v in columns:
        m = cases[(cases.variant == v) & (cases.region == reg)].pivot_table(index="case_id", columns="eval_subset", values="value", dropna=False)
        m = m.reindex(columns=labels)
        lo, hi = bootstrap_mean_ci(m.to_numpy()) if len(m) > 1 else (math.nan, math.nan)
        ci_cells.append(Cell(math.nan, f"[{fmt(lo, style.digits)}, {fmt(hi, style.digits)}]" if math.isfinite(lo) else "-"))
        ci_frame.append({"region": reg, "variant": v, "ci_low": lo, "ci_high": hi, "n_cases": len(m)})
    out_rows.append(Row("Avg 95% CI", ["95% CI", *blank], ci_cells, in_csv=False))
    n_seeds = int(summary["count"].max())
    caption = (f"{style.name} per modality subset; {describe_group(d, store)}; {policy_text(d)}; {et_text(et_region, d)}. "
               f"Per case, then the mean over cases per seed, then {'mean ± std over ' + str(n_seeds) + ' seeds' if n_seeds > 1 else 'one seed'}. "
               f"● available, ○ missing. Bold: best per row and region ({'highest' if style.higher_is_better else 'lowest'}). "
               f"{MARK}: differs from the best other method of that row and region (paired Wilcoxon signed-rank test over "
               f"seed-averaged cases, two-sided, Holm-corrected over the {len(tests)} tests of this table, p < {ALPHA}). "
               f"Avg: unweighted mean over the {len(subsets)} subsets; 95% CI: percentile bootstrap over patients "
               f"({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}; a resampled patient keeps all its subsets).")
    extras = {"tests": tests.sort_values(["eval_subset", "region", "variant"], kind="stable").reset_index(drop=True),
              "ci": pd.DataFrame(ci_frame)}
    return Table(f"{metric}_{rows.protocol.iloc[0]}_{rows.dataset.iloc[0]}_{rows.budget.iloc[0]}", caption,
                 list(subsets[0].all_modalities), columns, out_rows, sorted(d.run_id.unique()), extras=extras)


def _summary_cells(summary: pd.DataFrame, keys: list[tuple], digits: int, higher_is_better: bool | None) -> list[Cell]:
    """Cells 'mean ± std' for ``keys`` of a `seed_summary`, the best bold (None: no bold)."""
    stats = [summary.loc[k] if k in summary.index else None for k in keys]
    means = [float(s["mean"]) if s is not None else math.nan for s in stats]
    stds = [float(s["std"]) if s is not None else math.nan for s in stats]
    bold = best_flags(means, higher_is_better) if higher_is_better is not None else [False] * len(keys)
    return [Cell(m, mean_std_text(m, s, digits), b) for m, s, b in zip(means, stds, bold)]


def non_dedicated_reference(rows: pd.DataFrame) -> pd.DataFrame:
    """The non-dedicated rows to compare dedicated models with: protocol non_dedicated if present, else the
    first non-dedicated protocol by name (sweeps such as alpha_beta hold other models of the same variant)."""
    nd = rows[rows["mode"] == "non_dedicated"]
    if nd.empty:
        return nd
    protocols = sorted(nd.protocol.unique())
    return nd[nd.protocol == ("non_dedicated" if "non_dedicated" in protocols else protocols[0])]


def gap_table(rows: pd.DataFrame, store: Store, et_region: str = "ET") -> Table:
    """Dedicated (one model per subset, scored on it) vs non-dedicated Dice per subset, and the gap."""
    ded = rows[(rows["mode"] == "dedicated") & (rows.eval_subset == rows.train_subset)]
    nd = non_dedicated_reference(rows)
    if ded.empty or nd.empty:
        raise Skip(f"needs dedicated and non-dedicated Dice rows of one data set and budget (dedicated: {len(ded)} rows, non-dedicated: {len(nd)})")
    variants = order_variants(set(ded.variant) & set(nd.variant))
    if not variants:
        raise Skip("no method variant has both dedicated and non-dedicated runs")
    ded, nd = (seg_values(x[x.variant.isin(variants)], "dice", et_region) for x in (ded, nd))
    subsets = canonical_subsets(ded)
    labels = [s.label for s in subsets]
    nd = nd[nd.eval_subset.isin(labels)]
    sd, sn = (seed_summary(x, ["variant", "eval_subset", "region"]) for x in (ded, nd))
    columns = [(reg, v) for reg in REGIONS for v in variants]
    out: list[Row] = []

    def add(key: str, row_labels: list[str], subset_labels: list[str], name: str, a: pd.DataFrame, b: pd.DataFrame | None,
            rule: bool) -> None:
        """One row: the mean over ``subset_labels`` of ``a``'s means, or of a - b (the gap) when ``b`` is given."""
        cells = []
        for reg, v in columns:
            m = [float(a.loc[(v, s, reg), "mean"]) if (v, s, reg) in a.index else math.nan for s in subset_labels]
            if b is not None:
                m = [x - float(b.loc[(v, s, reg), "mean"]) if (v, s, reg) in b.index else math.nan for x, s in zip(m, subset_labels)]
            value = float(np.mean(m))
            cells.append(Cell(value, (f"{value:+.2f}" if b is not None else fmt(value, 2)) if math.isfinite(value) else "-"))
        out.append(Row(key, [*row_labels, name], cells if b is not None else bold_blocks(cells, len(variants), True), rule))

    avg = ["Avg"] + [""] * (len(subsets[0].mask) - 1)
    for row_labels, subset_labels, key in [*((presence_labels(s.mask), [s.label], s.label) for s in subsets), (avg, labels, "Avg")]:
        add(f"{key} dedicated", row_labels, subset_labels, "dedicated", sd, None, bool(out))
        add(f"{key} non-dedicated", row_labels, subset_labels, "non-dedicated", sn, None, False)
        add(f"{key} gap", row_labels, subset_labels, "gap", sd, sn, False)
    caption = (f"Dedicated vs non-dedicated training, Dice (%) on each dedicated model's own subset; dedicated: "
               f"{describe_group(ded, store)}; non-dedicated: {describe_group(nd, store)}; {policy_text(ded)}; "
               f"{et_text(et_region, ded)}. Means over cases, then over seeds; gap = dedicated − non-dedicated "
               f"(Dice points; positive: the dedicated model is better). Bold: best per row and region.")
    return Table(f"gap_dedicated_{ded.dataset.iloc[0]}_{ded.budget.iloc[0]}", caption, [*subsets[0].all_modalities, "training"],
                 columns, out, sorted(set(ded.run_id) | set(nd.run_id)))


def with_params(rows: pd.DataFrame, store: Store) -> pd.DataFrame:
    """``rows`` with a ``params`` column: each run's resolved method parameters (meta.json)."""
    params = {r: resolved_params(store, r) for r in rows.run_id.unique()}
    out = rows.copy()
    out["params"] = out.run_id.map(params)
    return out


def dao_table(rows: pd.DataFrame, store: Store, subset: str = "T1", et_region: str = "ET") -> Table:
    """ShaSpec's Table 4: Dice per DAO loss (columns) for ET/TC/WT on ``subset`` and averaged over subsets."""
    d = with_params(rows[rows.metric == "dice"], store)
    d["dao"] = [p.get("dao", "default") for p in d.params]
    d = d[d.dao != "default"] if (d.dao != "default").any() else d
    if d.dao.nunique() < 2:
        raise Skip("no runs differing in the DAO loss (protocol dao_loss; runs record their resolved parameters in meta.json)")
    d = seg_values(d, "dice", et_region)
    d["variant"] = d.dao
    losses = sorted(d.dao.unique())
    if subset not in set(d.eval_subset):
        raise Skip(f"the DAO runs were not scored on subset {subset}")
    s1 = seed_summary(d[d.eval_subset == subset], ["variant", "region"])
    per_seed = d.groupby(["variant", "region", "seed", "eval_subset"]).value.mean().groupby(level=["variant", "region", "seed"]).mean()
    s2 = per_seed.groupby(level=["variant", "region"]).agg(["mean", "std", "count"])
    out = [Row(f"{subset} {reg}", [subset, reg], _summary_cells(s1, [(l, reg) for l in losses], 2, True)) for reg in REGIONS]
    n = d.eval_subset.nunique()
    out += [Row(f"Avg {reg}", [f"Avg ({n} subsets)", reg], _summary_cells(s2, [(l, reg) for l in losses], 2, True), i == 0)
            for i, reg in enumerate(REGIONS)]
    caption = (f"DAO-loss ablation (ShaSpec Table 4), Dice (%), tested with {subset} only and averaged over the {n} "
               f"evaluation subsets; {describe_group(d, store)}; {policy_text(d)}; {et_text(et_region, d)}. "
               f"Mean ± std over seeds; bold: best per row. Variants: {', '.join(sorted(set(rows.variant)))}.")
    return Table(f"dao_{d.protocol.iloc[0]}_{d.dataset.iloc[0]}_{d.budget.iloc[0]}", caption, ["test", "region"],
                 [("DAO loss", l) for l in losses], out, sorted(d.run_id.unique()))


CLASSIFICATION_SCORES = (("accuracy", "Accuracy (%)", 100.0), ("f1_micro", "F1-micro (%)", 100.0), ("auc_macro_ovr", "AUC (%)", 100.0))


def classification_table(rows: pd.DataFrame, store: Store) -> Table:
    """Accuracy, F1-micro and AUC per missing rate (when the protocol has one) or per evaluation subset."""
    d = rows[rows.metric == "correct"]
    if d.empty:
        raise Skip("no classification rows (metric 'correct')")
    by_rate = "missing_rate" in d and d.missing_rate.notna().any()
    key = "missing_rate" if by_rate else "eval_subset"
    scores = []
    for (v, seed, k), g in d.groupby(["variant", "seed", key], sort=True):
        scores.append({"variant": v, "seed": seed, key: k, **classification_scores(g)})
    frame = pd.DataFrame(scores)
    variants = order_variants(frame.variant)
    keys = sorted(frame[key].unique()) if by_rate else [s.label for s in canonical_subsets(d)]
    columns = [(name, v) for _, name, _ in CLASSIFICATION_SCORES for v in variants]
    out = []
    for k in keys:
        cells = []
        for score, _, scale in CLASSIFICATION_SCORES:
            sub = frame[frame[key] == k].assign(value=lambda f: f[score] * scale)
            summary = sub.groupby("variant").value.agg(["mean", "std", "count"])
            cells += _summary_cells(summary, variants, 2, True)
        out.append(Row(str(k), [f"{k:g}" if by_rate else str(k)], cells))
    caption = (f"Classification on {describe_group(d, store)}: accuracy, F1-micro (single-label: equals accuracy) and "
               f"macro one-vs-rest AUC per {'missing rate' if by_rate else 'available modality subset'}; "
               f"per seed over all test samples, then mean ± std over seeds. Bold: best per row and score.")
    return Table(f"classification_{d.protocol.iloc[0]}_{d.dataset.iloc[0]}_{d.budget.iloc[0]}", caption,
                 ["missing rate" if by_rate else "subset"], columns, out, sorted(d.run_id.unique()))


def count_cell(n: float) -> Cell:
    """An integer with thousands separators ('-' when unknown)."""
    return Cell(n, f"{int(n):,}") if math.isfinite(n) else Cell()


def _median_iqr(values: pd.Series, digits: int) -> Cell:
    if values.empty:
        return Cell()
    q1, med, q3 = np.quantile(values.to_numpy(float), [0.25, 0.5, 0.75])
    return Cell(float(med), f"{med:.{digits}f} [{q1:.{digits}f}, {q3:.{digits}f}]")


MEMORY_KINDS = {"peak_cuda_allocated_mib": "CUDA max allocated", "peak_process_rss_mib": "process peak RSS",
                "peak_process_rss_mib_lifetime": "process peak RSS (lifetime)",
                "peak_rss_above_phase_start_mib": "process peak RSS above the phase's start"}


def timing_table(rows: pd.DataFrame, store: Store) -> Table:
    """Per method of the timing protocol: parameters, train s/iteration, inference s/case (median [IQR]),
    peak memory per phase, batch, patch, device, torch version, and whether the device was shared."""
    d = rows[rows["mode"] == "timing"]
    if d.empty:
        raise Skip("no timing runs (run: python bench.py --protocol timing --methods ...)")
    out = []
    for run_id in sorted(d.run_id.unique(), key=lambda r: (natural_key(d[d.run_id == r].variant.iloc[0]), r)):
        g, meta = d[d.run_id == run_id], store.meta.get(run_id, {})
        b, t = meta.get("spec", {}).get("budget", {}), meta.get("timing", {})

        def metric(name: str, phase: str | None = None) -> pd.Series:
            sel = g[(g.metric == name) & ((g.region == phase) if phase else True)]
            return sel.value

        mem_kind = str(g.memory_kind.iloc[0]) if "memory_kind" in g else "-"
        cells = [count_cell(float(metric("parameters").iloc[0]) if len(metric("parameters")) else math.nan),
                 _median_iqr(metric("train_s_per_iter"), 4), _median_iqr(metric("infer_s_per_case"), 4),
                 *(Cell(float(v.iloc[0]), fmt(float(v.iloc[0]), 0)) if len(v) else Cell()
                   for v in (metric("peak_mem_mib", "train"), metric("peak_mem_mib", "infer"))),
                 Cell(text=MEMORY_KINDS.get(mem_kind, mem_kind)), Cell(float(b.get("batch", math.nan)), str(b.get("batch", "-"))),
                 Cell(text="x".join(map(str, b.get("patch") or []))), Cell(text=str(meta.get("device_name", meta.get("device", "-")))),
                 Cell(text=str(meta.get("versions", {}).get("torch", "-"))),
                 Cell(float(bool(t.get("shared_device"))), "yes" if t.get("shared_device") else "no")]
        out.append(Row(g.variant.iloc[0], [g.variant.iloc[0]], cells))
    first = store.meta.get(str(d.run_id.iloc[0]), {}).get("timing", {})
    caption = (f"Timing and memory ({d.protocol.iloc[0]} protocol, data set {d.dataset.iloc[0]}, budget {d.budget.iloc[0]}): "
               f"one method at a time; {first.get('warmup', '?')} warm-up then {first.get('iterations', '?')} timed training "
               f"iterations (forward, backward, optimiser step; data sampling excluded) and {first.get('inference_warmup', '?')} "
               f"warm-up then {first.get('inference_passes', '?')} timed inference passes with every modality (segmentation: "
               f"sliding-window prediction of one test case; classification: one batch of test samples); median [IQR]; device synchronised around each timed step (CUDA events on GPU). "
               f"Peak memory: CUDA max allocated on GPU, peak process RSS on CPU (labelled). 'shared device': the load "
               f"average exceeded the cores available, or other processes held GPU memory, so the timing is not comparable.")
    names = ["parameters", "train s/iter", "infer s/case", "peak MiB train", "peak MiB infer", "memory", "batch", "patch",
             "device", "torch", "shared device"]
    return Table(f"timing_{d.dataset.iloc[0]}_{d.budget.iloc[0]}", caption, ["method"], [("", n) for n in names], out,
                 sorted(d.run_id.unique()))


def cost_table(rows: pd.DataFrame, store: Store) -> Table:
    """What every training run cost, from meta.json: train s/iteration, eval s/case, peak memory, device."""
    runs = rows[rows["mode"] != "timing"].drop_duplicates("run_id")
    if runs.empty:
        raise Skip("no training runs")
    recs = []
    for r in runs.itertuples():
        m = store.meta.get(r.run_id, {})
        mem = m.get("memory", {})
        kind, peak = next(iter(sorted(mem.items())), ("-", math.nan))
        kind = MEMORY_KINDS.get(kind, kind)
        recs.append({"protocol": r.protocol, "budget": r.budget, "variant": r.variant, "run_id": r.run_id,
                     "parameters": m.get("parameters", math.nan), "train": m.get("timings", {}).get("train_seconds_per_iteration", math.nan),
                     "eval": m.get("timings", {}).get("eval_seconds_per_case", math.nan), "peak": peak, "kind": kind,
                     "device": m.get("device_name", m.get("device", "-"))})
    f = pd.DataFrame(recs)
    out = []
    for (protocol, budget, variant), g in sorted(f.groupby(["protocol", "budget", "variant"]), key=lambda kv: (kv[0][0], kv[0][1], natural_key(kv[0][2]))):
        out.append(Row(f"{protocol}/{budget}/{variant}", [protocol, budget, variant], [
            Cell(float(len(g)), str(len(g))), count_cell(float(g.parameters.iloc[0])),
            Cell(float(g.train.mean()), fmt(float(g.train.mean()), 4)), Cell(float(g["eval"].mean()), fmt(float(g["eval"].mean()), 4)),
            Cell(float(g.peak.max()), fmt(float(g.peak.max()), 0)), Cell(text=str(g.kind.iloc[0])),
            Cell(text=", ".join(sorted(set(map(str, g.device)))))]))
    caption = ("Cost of the training runs in the store, from each run's meta.json: training seconds per iteration "
               "(whole loop: data sampling, checkpoints and logging included) and evaluation seconds per case (all "
               "subsets, scoring included), mean over runs; peak memory: the maximum over runs (CPU: peak process RSS, "
               "which includes the data set and evaluation; GPU: CUDA max allocated). For controlled timings see the timing table.")
    return Table("run_costs", caption, ["protocol", "budget", "variant"],
                 [("", n) for n in ("runs", "parameters", "train s/iter", "eval s/case", "peak MiB", "memory", "device")],
                 out, sorted(f.run_id))
