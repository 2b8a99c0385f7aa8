#!/usr/bin/env python
"""Turn a results store into tables: ``python analysis/make_tables.py results/<sweep> [--out DIR]``.

Reads only the store (never imports a method). Writes, per protocol and data set in the sweep, the
Dice table (subsets x ET/TC/WT per method, Avg row) as Markdown and CSV, and prints it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from missbench.store import load_rows  # noqa: E402
from missbench.tables import dice_summary, format_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path, help="a sweep folder of the results store")
    p.add_argument("--out", type=Path, default=None, help="output folder (default <sweep>/tables)")
    args = p.parse_args(argv)
    if not args.sweep.is_dir():
        print(f"make_tables.py: error: {args.sweep} is not a folder", file=sys.stderr)
        return 2
    rows = load_rows(args.sweep)
    if rows.empty:
        print(f"make_tables.py: no finished runs in {args.sweep}", file=sys.stderr)
        return 1
    out = args.out or args.sweep / "tables"
    out.mkdir(parents=True, exist_ok=True)
    for (protocol, dataset, budget), group in rows.groupby(["protocol", "dataset", "budget"], sort=False):
        table = dice_summary(group)
        stem = f"dice_{protocol}_{dataset}_{budget}"
        caption = (f"Dice (%), {protocol} protocol, {dataset}, budget {budget}, test split; empty-region policy "
                   f"'{group.empty_policy.iloc[0]}'; ET without post-processing; runs: {', '.join(sorted(group.run_id.unique()))}")
        text = format_table(table)
        (out / f"{stem}.md").write_text(f"{caption}\n\n```\n{text}\n```\n")
        (table * 100).round(2).to_csv(out / f"{stem}.csv")
        print(f"{caption}\n{text}\n")
    print(f"tables: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
