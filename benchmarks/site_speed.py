"""CPU seconds of analysis/make_tables.py on a large store: the tables alone (``--no-figures``) and the whole results
site (``--site``: tables, figures, a page per pool and per run), each in a fresh process. Target (issue 22): the site of
1,000 runs in at most 60 s of CPU on a 2-core machine.

    python benchmarks/site_speed.py                       # a fabricated store of 1,000 runs (missbench.report.synthetic)
    python benchmarks/site_speed.py --seeds 2 --cases 20  # another size
    python benchmarks/site_speed.py --store results       # an existing store instead (nothing is fabricated)

The fabricated runs are not trained: model and score folders are written as the engine writes them (spec, request,
log, meta, rows; every protocol's shape, failed and stopped runs among them) by missbench/report/synthetic.py, the
module the report's tests use too. CPU time (user + system of the child process) rather than wall time: on a shared
machine it moves far less with the load. The outputs go to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET_S = 60.0


def child_cpu(cmd: list[str]) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, exit status) of ``cmd`` run to completion in the checkout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "MISSBENCH_ROOT": str(ROOT)})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        print(proc.stderr[-2000:], file=sys.stderr)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall, proc.returncode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=None, help="an existing results folder (default: fabricate one)")
    p.add_argument("--seeds", type=int, default=5, help="seeds of the fabricated store (5: 1,000 runs)")
    p.add_argument("--cases", type=int, default=10, help="test cases of its segmentation runs (the default budget's 10)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="site_speed_") as tmp:
        work = Path(tmp)
        store = args.store
        if store is None:
            from missbench.report.synthetic import fabricate

            store = work / "store"
            t0 = time.perf_counter()
            keys = fabricate(store, seeds=args.seeds, cases=args.cases)
            print(f"fabricated {len(keys)} runs ({args.seeds} seeds, {args.cases} test cases) in {time.perf_counter() - t0:.1f} s")
        make = [sys.executable, "analysis/make_tables.py", str(store)]
        from missbench.report import load_store

        runs = len(load_store(store).runs)
        print(f"{'command':<44} {'runs':>6} {'CPU s':>7} {'wall s':>7}  target")
        for name, cmd in (("make_tables.py --no-figures", [*make, "--no-figures", "--out", str(work / "tables")]),
                          ("make_tables.py --site", [*make, "--site", str(work / "site")])):
            cpu, wall, status = child_cpu(cmd)
            target = f"<= {TARGET_S:.0f} s: {'met' if cpu <= TARGET_S else 'MISSED'}" if "--site" in name else ""
            print(f"{name:<44} {runs:>6} {cpu:>7.1f} {wall:>7.1f}  {target}" + (f" (exit status {status})" if status else ""))


if __name__ == "__main__":
    main()
