"""CPU seconds of the fast commands, each in a fresh process: ``bench.py --help`` and ``bench.py list``
must stay under 1.5 s of CPU (issue #17), and ``import torch`` alone is the floor of any command that
builds a method (``list`` counts every method's parameters, on the meta device).

    python benchmarks/cli_speed.py [--repeats 5]

CPU time (user + system, of the child process) rather than wall time: on a shared machine it moves
far less with the load. ``list`` is torch's import plus the meta-device builds (torch.nn.init skipped,
no garbage collection), the plugins and the protocols, so it meets 1.5 s only where ``import torch``
itself takes well under that. The README's "Measured here" section quotes this script's output
(scripts/measured.py).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 1.5
COMMANDS = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "python bench.py --help": [sys.executable, "bench.py", "--help"],
    "python bench.py list": [sys.executable, "bench.py", "list"],
}


def child_cpu(cmd: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``cmd`` run to completion in the checkout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "MISSBENCH_ROOT": str(ROOT)})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    subprocess.run(COMMANDS["python bench.py list"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)  # warm the file cache
    print(f"{'command':<28} {'CPU s (median)':>15} {'min':>6} {'wall s':>7}  target")
    for name, cmd in COMMANDS.items():
        runs = [child_cpu(cmd) for _ in range(args.repeats)]
        cpu = [c for c, _ in runs]
        target = "" if "import torch" in name else f"< {TARGET_S} s: {'met' if statistics.median(cpu) < TARGET_S else 'MISSED'}"
        print(f"{name:<28} {statistics.median(cpu):>15.2f} {min(cpu):>6.2f} {statistics.median(w for _, w in runs):>7.2f}  {target}")


if __name__ == "__main__":
    main()
