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
