"""How a run executes: device, memory format, mixed precision, compilation, batch prefetching, profiling.

These options change speed, not the experiment: they are recorded in meta.json but are not part of
the run id (channels-last and compilation reorder float sums; ``amp`` rounds activations to
bfloat16, so it is off unless asked for, and recorded with every run; prefetching changes no
number). The phase timer behind ``--profile`` lives here too: tasks and the trainer time their phases with it.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import torch

_NULL = contextlib.nullcontext()


@dataclass(frozen=True)
class Execution:
    """Where and how a run executes (``bench.py``'s execution flags)."""

    device: str = "cpu"
    channels_last: bool = True
    progress: bool = True
    #: Sliding windows evaluated per forward pass.
    window_batch: int = 8
    #: "bf16": forward passes under bfloat16 autocast; "off": float32 throughout.
    amp: str = "off"
    #: torch.compile backend for the method's forward ("inductor", "eager", ...); None: eager PyTorch.
    compile: str | None = None
    #: Time the phases of training and evaluation into profile.json.
    profile: bool = False
    #: Draw the next training batch in a background thread while the current step runs (same batches, same order).
    prefetch: bool = True

    def autocast(self) -> contextlib.AbstractContextManager:
        """The mixed-precision context for forward passes (a no-op when ``amp`` is "off")."""
        return torch.autocast(self.torch_device.type, dtype=torch.bfloat16, enabled=self.amp == "bf16")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def prepare(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """Move an input (or a list of per-modality inputs) to the device, 5-D ones in the chosen memory format."""
        if isinstance(x, list):
            return [self.prepare(t) for t in x]
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last and x.ndim == 5 else x

    def place(self, module: torch.nn.Module, volumes: bool) -> torch.nn.Module:
        """Move ``module`` to the device; channels-last for 3-D convolutions (``volumes``) when chosen; compile it if asked."""
        fmt = torch.channels_last_3d if self.channels_last and volumes else torch.contiguous_format
        module.to(self.torch_device, memory_format=fmt)
        if self.compile:
            module.compile(backend=self.compile)  # forward only; state-dict keys stay as they are
        return module


class PhaseTimer:
    """Accumulates seconds and calls per named phase; ``phase(name)`` is a free no-op when disabled.

    On, each phase is timed with wall clock after a device synchronisation, so GPU work is charged
    to the phase that queued it.
    """

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
