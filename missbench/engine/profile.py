"""Phase timer for ``bench.py --profile``: where a training step and an evaluation spend their time.

Off by default and then free (a shared no-op context). On, each phase is timed with wall clock after
a device synchronisation, so GPU work is charged to the phase that queued it; the sums go to
``profile.json`` in the run folder and a short table into the log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch

_NULL = contextlib.nullcontext()
log = logging.getLogger("missbench")


class PhaseTimer:
    """Accumulates seconds and calls per named phase; ``phase(name)`` is a no-op when disabled."""

    def __init__(self, enabled: bool = False, device: torch.device | str = "cpu") -> None:
        self.enabled = enabled
        self.cuda = torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - t0
            self.calls[name] += 1

    def phase(self, name: str) -> contextlib.AbstractContextManager:
        return self._timed(name) if self.enabled else _NULL

    def summary(self, wall: float) -> dict[str, dict[str, float]]:
        """{phase: {seconds, calls, share}} in first-use order, share of ``wall`` seconds; "other" is the
        untimed rest (progress bar, logging, sliding-window stitching, model selection set-up)."""
        phases = dict(self.seconds) | {"other": max(wall - sum(self.seconds.values()), 0.0)}
        return {k: {"seconds": round(v, 4), "calls": self.calls.get(k, 0), "share": round(v / (wall or 1.0), 4)}
                for k, v in phases.items()}


def write_profile(path: Path, timers: dict[str, PhaseTimer], walls: dict[str, float]) -> None:
    """``profile.json`` ({part: {phase: {seconds, calls, share}}}) and a readable table in the log."""
    from missbench.store.run_folder import write_atomic

    out = {part: timer.summary(walls[part]) for part, timer in timers.items()}
    write_atomic(path, (json.dumps(out, indent=2) + "\n").encode())
    for part, phases in out.items():
        log.info("profile of %s (%.2f s): %s", part, walls[part],
                 ", ".join(f"{k} {v['seconds']:.2f} s ({v['share']:.0%})" for k, v in phases.items()))
