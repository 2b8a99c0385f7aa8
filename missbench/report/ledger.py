"""The reproduction ledger: published BraTS2018 Dice beside this store's runs of the same protocol (A or B,
never mixed), per cell published minus measured with its CI where seeds allow, the signed mean bias of each
published entry and method, and how well the published ranking of methods agrees with the measured one
(Spearman and Kendall)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from missbench.report.load import Store
from missbench.report.model import Pool
from missbench.report.published import Published, brats_protocol, load_published
from missbench.report.tables import REGIONS, Skip, seg_values

#: The harness's method for a published method name (published rows of methods the harness lacks match nothing).
HARNESS = {"U-HeMIS": "hemis", "HeMIS": "hemis", "U-HVED": "uhved", "mmFormer": "mmformer", "RFNet": "rfnet",
           "ShaSpec": "shaspec"}
#: Level of the per-cell confidence intervals (Student t over seeds).
LEVEL = 0.95


def harness_method(entry: Published) -> str | None:
    """The method of this harness a published entry reports (None: not implemented here)."""
    return HARNESS.get(entry.method)


@dataclass
class Ledger:
    """One pool of runs of BraTS2018 protocol ``protocol`` against the published entries of that protocol.

    ``cells``: one row per (entry, column, subset or 'Avg', region): published, measured (mean over seeds of the
    mean over cases), diff = published - measured, its CI (published minus the t interval of the measured mean
    over seeds; NaN with one seed) and the seeds. ``bias``: per entry and column, the signed mean of diff over its
    cells (per-subset cells where the paper prints them, else its three averages) and the mean absolute diff.
    ``methods``: the signed mean bias per method (over its entries). ``agreement``: per region and for the mean of
    the regions, Spearman's rho and Kendall's tau between the published values (mean over a method's entries) and
    the measured Avg of the method's column, with the number of methods."""

    protocol: str
    pool: Pool
    cells: pd.DataFrame
    bias: pd.DataFrame
    methods: pd.DataFrame
    agreement: pd.DataFrame
    unmatched: list[str] = field(default_factory=list)


def seed_means(pool: Pool, store: Store, et_region: str) -> tuple[pd.Series, pd.Series]:
    """Per (column, eval_subset, region, seed) the mean Dice (%) over cases, and per (column, region, seed) the mean
    over the subsets of the seeds that have them all."""
    d = seg_values(pool, store, "dice", et_region)
    per_seed = d.groupby(["column", "eval_subset", "region", "seed"], sort=True).value.mean()
    n = d.eval_subset.nunique()
    by = per_seed.groupby(level=["column", "region", "seed"])
    avg = by.mean()[by.count() == n]
    return per_seed, avg


def interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and the t interval of the mean over seeds (NaN bounds with fewer than two seeds)."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf((1 + LEVEL) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def agreement(published: dict[str, float], measured: dict[str, float]) -> dict[str, float]:
    """Spearman and Kendall between two rankings of the same methods (NaN with fewer than two, or a constant one)."""
    methods = sorted(m for m in published if m in measured and math.isfinite(published[m]) and math.isfinite(measured[m]))
    out = {"n": float(len(methods)), "spearman": math.nan, "spearman_p": math.nan, "kendall": math.nan, "kendall_p": math.nan}
    if len(methods) >= 2:
        a, b = [published[m] for m in methods], [measured[m] for m in methods]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho, tau = stats.spearmanr(a, b), stats.kendalltau(a, b)
        out |= {"spearman": float(rho.statistic), "spearman_p": float(rho.pvalue), "kendall": float(tau.statistic),
                "kendall_p": float(tau.pvalue)}
    return out


def ledger(pool: Pool, store: Store, entries: list[Published], et_region: str = "ET") -> Ledger:
    """The ledger of one pool against the published ``entries`` of its protocol (Skip when none matches a column)."""
    protocol = brats_protocol(pool.setting)
    if protocol is None:
        raise Skip(f"{pool.name} is not a BraTS2018 protocol A or B pool")
    entries = [e for e in entries if e.protocol == protocol]
    per_seed, avg = seed_means(pool, store, et_region)
    columns = {c.label: c for c in pool.columns}
    pairs = [(e, c) for e in entries for c in pool.columns if c.method == harness_method(e)]
    rows, bias = [], []
    for e, c in pairs:
        diffs = []
        for region in REGIONS:
            subsets = [(s, v) for s, v in e.dice.get(region, {}).items()] + [("Avg", e.average[region])]
            for subset, published in subsets:
                if subset == "Avg":
                    values = avg.loc[(c.label, region)].to_numpy(float) if (c.label, region) in avg.index else np.empty(0)
                else:
                    key = (c.label, subset, region)
                    values = per_seed.loc[key].to_numpy(float) if key in per_seed.index else np.empty(0)
                mean, lo, hi = interval(values)
                diff = published - mean
                rows.append({"entry": e.id, "method": e.method, "column": c.label, "subset": subset, "region": region,
                             "published": published, "measured": mean, "diff": diff, "ci_low": published - hi,
                             "ci_high": published - lo, "seeds": int(np.isfinite(values).sum())})
                if math.isfinite(diff) and (subset != "Avg" or not e.dice):
                    diffs.append(diff)
        bias.append({"entry": e.id, "method": e.method, "column": c.label, "citation": e.citation, "cells": len(diffs),
                     "per_subset": bool(e.dice), "bias": float(np.mean(diffs)) if diffs else math.nan,
                     "abs_bias": float(np.mean(np.abs(diffs))) if diffs else math.nan})
    cells = pd.DataFrame(rows, columns=["entry", "method", "column", "subset", "region", "published", "measured", "diff",
                                        "ci_low", "ci_high", "seeds"])
    bias_frame = pd.DataFrame(bias, columns=["entry", "method", "column", "citation", "cells", "per_subset", "bias", "abs_bias"])
    methods = (bias_frame.dropna(subset=["bias"]).groupby("method", sort=True)
               .agg(entries=("entry", "nunique"), bias=("bias", "mean"), abs_bias=("abs_bias", "mean")).reset_index())
    # rankings: one value per harness method (the mean of its entries), measured by its plain column where it has one
    harness = sorted({harness_method(e) for e, _ in pairs})
    plain = {m: columns[m] if m in columns else next(c for c in pool.columns if c.method == m) for m in harness}
    agree = []
    for region in [*REGIONS, "mean"]:
        regions = REGIONS if region == "mean" else (region,)
        published = {m: float(np.mean([np.mean([e.average[r] for r in regions]) for e in entries if harness_method(e) == m]))
                     for m in harness}
        measured = {}
        for m, c in plain.items():
            values = [float(avg.loc[(c.label, r)].mean()) if (c.label, r) in avg.index else math.nan for r in regions]
            measured[m] = float(np.mean(values))
        agree.append({"region": region, **agreement(published, measured), "methods": ", ".join(harness)})
    unmatched = sorted(f"{e.method} ({e.id})" for e in entries if harness_method(e) not in {c.method for c in pool.columns})
    return Ledger(protocol, pool, cells, bias_frame, methods, pd.DataFrame(agree), unmatched)


def ledgers(pools: list[Pool], store: Store, kinds: dict[str, str], et_region: str = "ET",
            errors: list[str] | None = None) -> tuple[dict[str, list[Published]], list[Ledger]]:
    """The published entries by protocol and the ledger of every segmentation pool of BraTS2018 protocol A or B
    that has a method in common with them; a pool whose ledger fails is one line in ``errors`` and the others are
    still made."""
    _, entries = load_published()
    by_protocol = {p: [e for e in entries if e.protocol == p] for p in sorted({e.protocol for e in entries})}
    out = []
    for pool in pools:
        protocol = brats_protocol(pool.setting)
        if protocol not in by_protocol or kinds.get(pool.name) != "segmentation":
            continue
        try:
            found = ledger(pool, store, by_protocol[protocol], et_region)
        except Skip:
            continue
        except Exception as e:  # noqa: BLE001 - one pool's ledger never stops the site
            if errors is None:
                raise
            errors.append(f"ledger {pool.name}: failed ({type(e).__name__}: {' '.join(str(e).split())})")
            continue
        if len(found.cells):
            out.append(found)
    return by_protocol, out
