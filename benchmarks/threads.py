#!/usr/bin/env python
"""Seconds per training step of a method with 1 and all threads, alone and beside a busy process, with OpenMP's
default wait policy and with OMP_WAIT_POLICY=PASSIVE: how the step degrades when a shared node's other jobs
take cores (threads that spin while their peer is descheduled), and which default degrades gracefully.

    python benchmarks/threads.py                       # ShaSpec, the default budget's batch and patch, 20 steps
    python benchmarks/threads.py --method zero_fill --steps 40

Each setting runs in a fresh process (the wait policy is read when OpenMP starts); the busy process is a pure
Python loop that keeps one core occupied. Ratios are to the first row: one thread, the default policy, no busy neighbour.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STEP = """
import json, sys, time
sys.path.insert(0, {root!r})
import torch
from missbench.core.execution import set_threads
from missbench.engine.contract import segmentation_batch
from missbench.core.tasks import get_task
from missbench.experiment import registry
set_threads({threads})
torch.manual_seed(0)
method = registry.method_class({method!r})(get_task("segmentation"), ("FLAIR", "T1", "T1c", "T2"))
method.to(memory_format=torch.channels_last_3d)
x, y = segmentation_batch(batch={batch}, size={patch})
x = x.to(memory_format=torch.channels_last_3d)
available = torch.ones(x.shape[0], 4, dtype=torch.bool)
opt = torch.optim.SGD(method.parameters(), lr=1e-3)
times = []
for step in range(3 + {steps}):
    t0 = time.perf_counter()
    loss = sum(method.training_output(x, available, y).losses.values())
    opt.zero_grad(); loss.backward(); opt.step()
    times.append(time.perf_counter() - t0)
print(json.dumps(sorted(times[3:])[len(times[3:]) // 2]))
"""


def measure(method: str, threads: int, passive: bool, busy: bool, steps: int, batch: int, patch: int) -> float:
    """The median seconds per step of one setting, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        time.sleep(0.5 if busy else 0)
        code = STEP.format(root=str(ROOT), threads=threads, method=method, batch=batch, patch=patch, steps=steps)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return float(json.loads(out.strip().splitlines()[-1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="shaspec")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--patch", type=int, default=32)
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"{args.method}, batch {args.batch}, patch {args.patch}^3, median of {args.steps} steps after 3 warm-up; {cores} cores")
    print(f"{'threads':>7} {'OMP wait':>8} {'busy neighbour':>15} {'s/step':>8} {'ratio':>6}")
    base = None
    for busy in (False, True):
        for threads in sorted({1, cores}):
            for passive in (False, True):
                s = measure(args.method, threads, passive, busy, args.steps, args.batch, args.patch)
                base = base or s
                print(f"{threads:>7} {'passive' if passive else 'default':>8} {'yes' if busy else 'no':>15} {s:>8.3f} {s / base:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
