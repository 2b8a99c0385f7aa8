#!/usr/bin/env python
"""Tables and figures from a results store: ``python analysis/make_tables.py <results dir> [--out DIR]``.

Reads only the store (run folders with rows.parquet, meta.json, features.npz; never imports a method)
and writes, as Markdown, LaTeX (booktabs) and CSV, each with the run ids it came from: the 15-row Dice
and HD95 tables per protocol (mean ± std over seeds, best in bold, Holm-corrected Wilcoxon marks,
bootstrap CI of the Avg row), classification scores, dedicated vs non-dedicated gaps, the DAO-loss
ablation, timing and run costs; and as PDF + PNG the alpha/beta curves, heat maps, per-case box plots,
critical-difference diagrams and the shared/specific feature plot. A table or figure whose input is
missing is skipped with a message. Reruns on the same store give byte-identical files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import figures  # noqa: E402
from analysis.load import Store, load_store  # noqa: E402
from analysis.render import Table, write_table  # noqa: E402
from analysis.tables import Skip, classification_table, cost_table, dao_table, gap_table, seg_table, timing_table  # noqa: E402
from missbench.report.summary import dice_summary, format_table  # noqa: E402

GROUP = ["protocol", "dataset", "budget"]


Job = tuple[str, bool, Callable[[], Table | list[Path]]]


def jobs(store: Store, args: argparse.Namespace) -> list[Job]:
    """(name, is a figure, job) for every table and figure this store could give; a job raises Skip when it cannot."""
    rows = store.rows
    seg = rows[rows.metric.isin(["dice", "hd95"]) & (rows["mode"] != "timing")]
    out: list[Job] = []
    for key, g in seg.groupby(GROUP, sort=True):
        name = "_".join(map(str, key))
        out += [(f"dice {name}", False, lambda g=g: seg_table(g, store, "dice", args.et)),
                (f"hd95 {name}", False, lambda g=g: seg_table(g, store, "hd95", args.et)),
                (f"heat map {name}", True, lambda g=g, n=name: figures.heatmap(g, args.out / f"fig_heatmap_{n}", args.et)),
                (f"box plots {name}", True, lambda g=g, n=name: figures.case_boxes(g, args.out / f"fig_cases_{n}", args.et)),
                (f"rank diagram {name}", True, lambda g=g, n=name: figures.cd_diagram(g, args.out / f"fig_ranks_{n}", args.et))]
    for key, g in rows[rows.metric == "correct"].groupby(GROUP, sort=True):
        out.append((f"classification {'_'.join(map(str, key))}", False, lambda g=g: classification_table(g, store)))
    for key, g in seg.groupby(["dataset", "budget"], sort=True):
        out.append((f"dedicated vs non-dedicated {'_'.join(map(str, key))}", False, lambda g=g: gap_table(g, store, args.et)))
    nd = seg[seg["mode"] == "non_dedicated"]
    for key, g in nd.groupby(GROUP, sort=True):
        name = "_".join(map(str, key))
        if g.variant.nunique() > 1 and g.method.nunique() == 1:  # a sweep of one method's parameters
            out += [(f"DAO ablation {name}", False, lambda g=g: dao_table(g, store, args.subset, args.et)),
                    (f"alpha/beta curves {name}", True,
                     lambda g=g, n=name: figures.sweep_curves(g, store, args.out / f"fig_alpha_beta_{n}", args.subset, args.et))]
    out += [("timing", False, lambda: timing_table(rows, store)), ("run costs", False, lambda: cost_table(rows, store)),
            ("shared/specific features", True, lambda: figures.feature_plot(store, args.out / "fig_features"))]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="a results folder: a sweep, or a folder of sweeps")
    p.add_argument("--out", type=Path, default=None, help="output folder (default <results>/tables)")
    p.add_argument("--et", choices=("ET", "ETpp"), default="ET", help="ET column: raw or post-processed (default ET)")
    p.add_argument("--subset", default="T1", help="test subset of the DAO table and alpha/beta curves (paper: T1)")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    args = p.parse_args(argv)
    if not args.results.is_dir():
        print(f"make_tables.py: error: {args.results} is not a folder", file=sys.stderr)
        return 2
    try:
        store = load_store(args.results)
    except ValueError as e:
        print(f"make_tables.py: error: {e}", file=sys.stderr)
        return 2
    if store.rows.empty:
        print(f"make_tables.py: no finished runs in {args.results}", file=sys.stderr)
        return 1
    args.out = args.out or args.results / "tables"
    args.out.mkdir(parents=True, exist_ok=True)
    figures.setup()
    written, skipped = [], []
    for name, is_figure, job in jobs(store, args):
        if args.no_figures and is_figure:
            continue
        try:
            result = job()
        except Skip as e:
            skipped.append(f"{name}: skipped ({e})")
            continue
        written += write_table(result, args.out) if isinstance(result, Table) else result
    seg = store.rows[store.rows.metric == "dice"]
    for key, g in seg[seg["mode"] != "timing"].groupby(GROUP, sort=True):
        print(f"Dice (%), {' '.join(map(str, key))}:\n{format_table(dice_summary(g))}\n")
    for line in skipped:
        print(line)
    print(f"{len(written)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
