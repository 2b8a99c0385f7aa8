"""``bench.py status|collect|cancel <sweep>``: follow a sweep from any process."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import pandas as pd

from missbench.report.summary import classification_summary, dice_summary, format_table
from missbench.store.run_folder import load_rows, parquet_bytes, write_atomic
from missbench.store.sweep import COLLECTED, UNFINISHED, cancel, states, status_text, summary


def sweep_command(name: str, argv: list[str]) -> int:
    """``status``, ``collect`` or ``cancel`` of a sweep folder, from any process."""
    p = argparse.ArgumentParser(prog=f"bench.py {name}", description={
        "status": "Each run's state (pending, running, done, failed, stopped) with its log.",
        "collect": "The table of the finished runs; their rows into <sweep>/collected.parquet.",
        "cancel": "Cancel the sweep's queued and running jobs."}[name])
    p.add_argument("sweep", type=Path, help="sweep folder (results/<protocol>_<dataset>_<budget>)")
    folder = p.parse_args(argv).sweep
    if name == "status":
        runs = states(folder)
        print(status_text(runs) + f"\n\n{len(runs)} runs: " + summary(runs).splitlines()[0])
        return 1 if any(r.state in UNFINISHED for r in runs) else 0
    if name == "collect":
        return report(folder, write=True)
    cancelled = cancel(folder)
    print(f"cancelled {len(cancelled)} jobs" + (f": {' '.join(cancelled)}" if cancelled else ""))
    return 0


def table_text(rows: pd.DataFrame) -> str:
    """The Dice table of a sweep's rows with a header naming protocol, data set and budget."""
    def names(col: str) -> str:
        return ", ".join(str(v) for v in rows[col].unique())

    seeds = " and seeds" if rows.seed.nunique() > 1 else ""
    if (rows.metric == "correct").all():
        return (f"Classification scores (%), {names('protocol')} protocol, {names('dataset')}, budget {names('budget')}, "
                f"test split, per sample{seeds}; model selected on the validation split:\n"
                + format_table(classification_summary(rows)))
    return (f"Dice (%), {names('protocol')} protocol, {names('dataset')}, budget {names('budget')}, test split, "
            f"mean over cases{seeds}; empty policy '{rows.empty_policy.iloc[0]}'; ET without post-processing:\n"
            + format_table(dice_summary(rows)))


def report(sweep: Path, run_ids: list[str] | None = None, write: bool = False, say: Callable[[str], None] = print) -> int:
    """Print the Dice table of the finished runs (of ``run_ids``, else all) and what did not finish,
    with log paths; with ``write`` also save the rows to ``<sweep>/collected.parquet``.
    Returns the exit status: 1 when a run failed or stopped, else 0."""
    runs = [r for r in states(sweep) if run_ids is None or r.run_id in run_ids]
    rows = load_rows(sweep, [r.run_id for r in runs if r.state == "done"])
    if not rows.empty:
        say("\n" + table_text(rows))
        if write:
            write_atomic(sweep / COLLECTED, parquet_bytes(rows))
            say(f"\nrows of {rows.run_id.nunique()} runs: {sweep / COLLECTED}")
    say(f"\n{len(runs)} runs: " + summary(runs))
    say(f"results: {sweep}")
    return 1 if any(r.state in UNFINISHED for r in runs) else 0
