#!/usr/bin/env python
"""Tables and figures from a results store: ``python analysis/make_tables.py <results dir> [--out DIR]``.

A thin command line over missbench.report, which reads only the store (never a method, the engine or
torch) and writes, as Markdown, LaTeX and CSV, each naming the runs it used and those it left out with
the reason: the 15-row Dice and HD95 tables per protocol, data set, budget and setting, classification
scores, dedicated vs non-dedicated gaps, the DAO-loss ablation, timing (one table per budget) and run
costs, optionally beside published numbers; and as PDF + PNG the alpha/beta curves, heat maps, per-case
box plots, critical-difference diagrams and the shared/specific feature plot. A table or figure whose
input is missing is skipped with a message. Reruns on the same store give byte-identical files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from missbench.report import console_tables, load_store, to_text  # noqa: E402
from missbench.report.render import LAYOUTS  # noqa: E402
from missbench.report.write import Options, unplaced, write_report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="a results folder: a sweep, or a folder of sweeps")
    p.add_argument("--out", type=Path, default=None, help="output folder (default <results>/tables)")
    p.add_argument("--et", choices=("ET", "ETpp"), default="ET", help="ET column: raw or post-processed (default ET)")
    p.add_argument("--subset", default="T1", help="test subset of the DAO table and alpha/beta curves (paper: T1)")
    p.add_argument("--latex", choices=LAYOUTS, default="auto",
                   help="LaTeX floats: auto (a column when a table fits one, else the page, else one float per ET / TC / "
                        "WT block), column, page, or split (a float per block); a table is scaled down to its float's "
                        "width only when wider (default auto)")
    p.add_argument("--published", choices=("A", "B"), default=None,
                   help="add published BraTS2018 numbers of this protocol (missbench/report/published.yaml) beside runs of "
                        "the same protocol, and a table of them; never beside other runs")
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
    if not store.done():
        print(f"make_tables.py: no finished runs in {args.results}", file=sys.stderr)
        return 1
    out = args.out or args.results / "tables"
    written = write_report(store, out, Options(args.et, args.subset, args.latex, args.published, not args.no_figures))
    for table in console_tables(store):
        print("\n" + to_text(table))
    for line in unplaced(store):
        print(f"in no table: {line}")
    print(f"{len(written)} files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
