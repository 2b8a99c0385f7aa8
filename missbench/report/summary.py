"""The summary Dice table: subsets in table order x (region, method), with an Avg row over subsets."""

from __future__ import annotations

import pandas as pd


def dice_summary(rows: pd.DataFrame, regions: tuple[str, ...] = ("ET", "TC", "WT")) -> pd.DataFrame:
    """Mean Dice per (eval subset, region, variant): over cases within a seed, then over seeds.

    A variant is a method with its overridden parameters, so grid points get their own columns.

    Rows keep the order of first appearance of ``eval_subset`` (the protocol's table order); the
    last row, "Avg", is the unweighted mean over subsets.
    """
    d = rows[(rows.metric == "dice") & rows.region.isin(regions)]
    order = list(dict.fromkeys(d.eval_subset))
    methods = list(dict.fromkeys(d.variant))
    per_seed = d.groupby(["variant", "seed", "eval_subset", "region"], sort=False).value.mean()
    mean = per_seed.groupby(level=["variant", "eval_subset", "region"], sort=False).mean()
    table = mean.unstack(["region", "variant"]).reindex(order)
    table = table.reindex(columns=pd.MultiIndex.from_product([list(regions), methods]))
    table.loc["Avg"] = table.mean()
    return table


def format_table(table: pd.DataFrame, scale: float = 100.0, digits: int = 1) -> str:
    """Plain text (Dice in %): one block per region, stacked, each with a column per variant."""
    blocks = []
    for region in dict.fromkeys(table.columns.get_level_values(0)):
        sub = table[region]
        head = [region] + list(sub.columns)
        body = [[str(i)] + [f"{v * scale:.{digits}f}" if pd.notna(v) else "-" for v in row] for i, row in zip(sub.index, sub.values)]
        widths = [max(len(r[c]) for r in [head, *body]) for c in range(len(head))]
        lines = ["  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths))) for r in [head, *body]]
        rule = "  ".join("-" * w for w in widths)
        blocks.append("\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1]]))
    return "\n\n".join(blocks)


#: Classification table columns: the keys of `missbench.core.metrics.classification_scores`, in this order.
CLASSIFICATION_METRICS = ("accuracy", "f1_micro", "f1_macro", "auc_macro_ovr")


def classification_summary(rows: pd.DataFrame, metrics: tuple[str, ...] = CLASSIFICATION_METRICS) -> pd.DataFrame:
    """Scores per (condition, variant): computed over the test samples of each seed, then averaged over seeds.

    A condition is the missing rate (``r=0.05``) where the protocol has one, the evaluation subset
    (``condition`` column: a subset label, or "masks" when each sample was scored with its own
    availability), or both, in canonical order (rates ascending, subsets by size, then modality
    order); "Avg" is the unweighted mean over conditions. Columns are (metric, variant), as `dice_summary`'s (region, variant).
    """
    from missbench.core.metrics import classification_scores

    d = rows[rows.metric == "correct"].copy()
    rated = d.missing_rate.notna().any() if "missing_rate" in d else False
    labels = d.condition.astype(str)
    if rated:
        rate = d.missing_rate.map(lambda r: f"r={r:g}")
        labels = rate if (d.condition == "masks").all() or d.condition.nunique() == 1 else rate + " " + labels
    d["_row"] = labels
    # Canonical order: rate, then subsets by size and modality order (as missbench.core.subsets.all_subsets).
    def bits(code: int) -> tuple[int, ...]:
        return tuple(i for i in range(int(code).bit_length()) if int(code) >> i & 1)

    rank = {c: k for k, c in enumerate(sorted(d.eval_code.unique(), key=lambda c: (len(bits(c)), bits(c))))}
    d["_rank"] = d.eval_code.map(rank).where(d.condition != "masks", 0)
    d = d.sort_values(["missing_rate", "_rank"] if rated else ["_rank"], kind="stable")
    order, variants = list(dict.fromkeys(d._row)), list(dict.fromkeys(d.variant))
    scores = [{"variant": v, "seed": s, "_row": r, **classification_scores(g)} for (v, s, r), g in d.groupby(["variant", "seed", "_row"], sort=False)]
    per_seed = pd.DataFrame(scores)
    mean = per_seed.groupby(["variant", "_row"], sort=False)[list(metrics)].mean()
    table = mean.unstack("variant").reindex(order).reindex(columns=pd.MultiIndex.from_product([list(metrics), variants]))
    table.index.name = None
    table.loc["Avg"] = table.mean()
    return table
