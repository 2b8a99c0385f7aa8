"""``bench.py status|collect|cancel <sweep>``: follow a sweep from any process."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from missbench.report import Store, console_tables, load_store, to_text
from missbench.store.run_folder import parquet_bytes, write_atomic
from missbench.store.state import UNFINISHED, State
from missbench.store.sweep import COLLECTED, cancel, states, status_text, summary


def sweep_command(name: str, argv: list[str]) -> int:
    """``status``, ``collect`` or ``cancel`` of a sweep folder, from any process."""
    p = argparse.ArgumentParser(prog=f"bench.py {name}", description={
        "status": "Each model's state with its scores (pending, running, done, failed, stopped) and its log.",
        "collect": "The table of the finished runs; their rows into <sweep>/collected.parquet. It reads the rows the runs "
                   "scored and computes no scores, so it takes no --threads.",
        "cancel": "Cancel the sweep's queued and running jobs."}[name])
    p.add_argument("sweep", type=Path, help="sweep folder (results/<protocol>_<dataset>_<budget>)")
    folder = p.parse_args(argv).sweep
    if name == "status":
        runs = states(folder)
        print(status_text(runs) + f"\n\n{len(runs)} models: " + summary(runs).splitlines()[0])
        return 1 if any(r.state in UNFINISHED for r in runs) else 0
    if name == "collect":
        return report(folder, write=True)
    cancelled = cancel(folder)
    print(f"cancelled {len(cancelled)} jobs" + (f": {' '.join(cancelled)}" if cancelled else ""))
    return 0


def table_text(store: Store) -> str:
    """The tables of a sweep's runs (missbench.report's one table model): what each pooled, and the runs
    it left out with the reason."""
    return "\n".join(to_text(t) for t in console_tables(store))


def report(sweep: Path, run_ids: list[str] | None = None, write: bool = False, say: Callable[[str], None] = print) -> int:
    """Print the tables of the finished scores (of ``run_ids``, keys ``<model id>/<score id>``, else all), the runs
    each left out and why, and what did not finish, with log paths; with ``write`` also save the rows to
    ``<sweep>/collected.parquet``. Returns the exit status: 1 when a model or score failed, stopped or is corrupt, else 0."""
    models = {key.split("/", 1)[0] for key in run_ids} if run_ids is not None else None
    runs = [r for r in states(sweep) if models is None or r.model_id in models]
    store = load_store(sweep, run_ids, {r.model_id: (r.state, r.detail) for r in runs if r.state is not State.DONE})
    if store.done():
        say("\n" + table_text(store))
        if write:
            write_atomic(sweep / COLLECTED, parquet_bytes(store.rows))
            say(f"\nrows of {len(store.done())} scores: {sweep / COLLECTED}")
    say(f"\n{len(runs)} models: " + summary(runs))
    say(f"results: {sweep}")
    return 1 if any(r.state in UNFINISHED for r in runs) else 0
