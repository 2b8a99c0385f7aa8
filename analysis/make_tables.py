#!/usr/bin/env python
"""Tables and figures from a results store: ``python analysis/make_tables.py <results dir> [--out DIR] [--site DIR]``.

A thin command line over missbench.report, which reads only the store (never a method, the engine or
torch) and writes, as Markdown, LaTeX and CSV, each naming the runs it used and those it left out with
the reason: the 15-row Dice and HD95 tables per protocol, data set, budget and setting, classification
scores, dedicated vs non-dedicated gaps, the DAO-loss ablation, modality value (marginal contribution, Shapley
value, monotonicity violations), timing (one table per budget) and run costs, optionally beside published numbers;
and as PDF + PNG the alpha/beta curves, DAO ablation, timing and memory, heat maps (Dice and modality value),
per-case box plots, critical-difference diagrams and the shared/specific feature plot.
With ``--site DIR``, also a static results site (missbench/report/site.py) that opens from file://: an index,
a page per table with its leaderboard, the reproduction ledger and a page per run.

Each table and figure is made once; one whose input is missing is skipped with a message, one that fails is
one line naming its pool, and the rest is still written. Exit status: the number of tables, figures and site
pages that failed (0: everything was made; capped at 100); 1 also when the store has no finished run; 2 for a
bad command line or store. Reruns on the same store give byte-identical files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from missbench.report import load_store, to_text  # noqa: E402
from missbench.report.modality import MARGIN  # noqa: E402
from missbench.report.render import LAYOUTS  # noqa: E402
from missbench.report.write import Options, Report, one_line  # noqa: E402


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
    p.add_argument("--margin", type=float, default=MARGIN, metavar="POINTS",
                   help="modality value: adding a modality that lowers a case's score (Dice or accuracy, in points) by more "
                        f"than this counts as a monotonicity violation (default {MARGIN:g})")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.add_argument("--site", type=Path, default=None, metavar="DIR",
                   help="also write a static results site into DIR (HTML, JSON and figures; opens from file://, no server); "
                        "the tables and figures then go to DIR/tables unless --out says otherwise")
    args = p.parse_args(argv)
    if not args.results.is_dir():
        print(f"make_tables.py: error: {args.results} is not a folder", file=sys.stderr)
        return 2
    try:
        store = load_store(args.results)
    except ValueError as e:
        print(f"make_tables.py: error: {e}", file=sys.stderr)
        return 2
    failed = 0
    if not store.done():
        print(f"make_tables.py: no finished runs in {args.results}", file=sys.stderr)
        if args.site is None:
            return 1
        failed += 1
    out = args.out or (args.site / "tables" if args.site is not None else args.results / "tables")
    report = Report(store, Options(args.et, args.subset, args.latex, args.published, not args.no_figures, args.margin))
    written = report.write(out)
    for table in report.console():
        print("\n" + to_text(table))
    for line in report.unplaced():
        print(f"in no table: {line}")
    print(f"{len(written)} files in {out}")
    if args.site is not None:
        from missbench.report.site import write_site

        try:
            site = write_site(report, args.site, out)
            for line in site.errors:
                print(line)
            failed += len(site.errors)
            print(f"site: {len(site.written)} files in {args.site} (open {args.site / 'index.html'})")
        except Exception as e:  # noqa: BLE001 - the tables are written; say what stopped the site
            print(f"site: failed ({one_line(e)})")
            failed += 1
    failed += len(report.failures)
    if report.failures:
        print(f"{len(report.failures)} of {len(report.outcomes)} tables and figures failed: "
              + "; ".join(o.job.name for o in report.failures))
    return min(failed, 100)


if __name__ == "__main__":
    sys.exit(main())
