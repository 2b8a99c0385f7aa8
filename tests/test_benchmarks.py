"""benchmarks/train_overhead.py runs through at its smallest size (4 CPU-s): it calls the method as the trainer does,
so a change to the contract cannot break it unnoticed (the smaller Method contract once left its loss without the task
term: an int with no backward, found only when scripts/measured.py reached it)."""

from __future__ import annotations

import subprocess
import sys

from conftest import CHECKOUT


def test_the_training_overhead_benchmark_runs():
    out = subprocess.run([sys.executable, "benchmarks/train_overhead.py", "--methods", "zero_fill", "--iterations", "1"],
                         cwd=CHECKOUT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-1].split()[0] == "zero_fill"
