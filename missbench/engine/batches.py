"""Training batches in iteration order: iteration k's batch with its availability applied (`draw_batch`),
delivered to the device by a `BatchStream`, which can draw batch k+1 in a background thread while step
k runs, so the device does not wait for patch sampling.

Prefetching changes no number: the same two generators (`SamplingRNG`) draw the same batches in the
same order, only earlier, and nothing else uses them. What a checkpoint records, though, is their state
at an iteration boundary as it was before that iteration's batch was drawn, and with prefetching their
live state is one batch ahead. So the stream snapshots the state whenever no draw is in flight (after
handing a batch over, before starting the next draw) and hands that over instead (`BatchStream.rng_state`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from missbench.core.availability import Inputs, draw_available, restrict_available, zero_inputs
from missbench.core.execution import Execution
from missbench.core.tasks.base import Batches
from missbench.core.training import TrainingDefaults

#: A batch as (inputs, target, availability), zeroed where a modality is missing.
Batch = tuple[Inputs, torch.Tensor, torch.Tensor]


@dataclass
class SamplingRNG:
    """The generators that draw training batches: numpy's (patches, flips) and torch's (modality dropping)."""

    numpy: np.random.Generator
    torch: torch.Generator

    def state(self) -> dict[str, Any]:
        """Both states under their checkpoint keys."""
        return {"numpy_rng": self.numpy.bit_generator.state, "torch_rng": self.torch.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.numpy.bit_generator.state = state["numpy_rng"]
        self.torch.set_state(state["torch_rng"])


def draw_batch(batches: Batches, step: int, fixed: tuple[bool, ...] | None, cfg: TrainingDefaults, warmup: int,
               gen: torch.Generator, batch: int, n_modalities: int, restrict: bool = False) -> Batch:
    """Iteration ``step``'s batch on the CPU, its availability (the data's masks, the fixed training subset,
    every modality during the warm-up, else the dropping scheme) applied by zeroing. With ``restrict`` (an
    incomplete-training protocol) the data's masks bound the draw instead (`restrict_available`): each sample
    shows the modalities its case has that the draw keeps, all of its case's where the draw keeps none."""
    x, y, masks = batches.sample(step)
    if masks is not None and not restrict:
        available = masks
    elif fixed is not None:
        available = torch.tensor([fixed] * batch)
    else:
        available = draw_available("full" if step < warmup else cfg.dropout, batch, n_modalities, gen)
        if masks is not None:
            available = restrict_available(available, masks)
    return zero_inputs(x, available), y, available


def _pinned(x: Inputs) -> Inputs:
    return [t.pin_memory() for t in x] if isinstance(x, list) else x.pin_memory()


class BatchStream:
    """The batches of iterations ``start`` to ``stop - 1`` (``draw(step)`` each), taken in order on the device.

    With ``exe.prefetch`` a background thread draws the next batch while the caller trains on the current
    one (in page-locked memory on CUDA, so the copy to the device does not block); without, `take` draws it.
    """

    def __init__(self, draw: Callable[[int], Batch], rngs: SamplingRNG, exe: Execution, stop: int) -> None:
        self.draw, self.rngs, self.exe, self.stop = draw, rngs, exe, stop
        self.pin = exe.prefetch and exe.torch_device.type == "cuda"
        self._state = rngs.state()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[int, Future[Batch]] | None = None

    def rng_state(self) -> dict[str, Any]:
        """The generators' state before the batch that `take` returns next was drawn (checkpoint keys)."""
        return self._state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """Restore the generators (a resumed run), before `running`."""
        assert self._pool is None, "the generators are restored before batches are drawn"
        self.rngs.set_state(state)
        self._state = self.rngs.state()

    @contextlib.contextmanager
    def running(self, start: int) -> Iterator[None]:
        """Take batches from iteration ``start`` on; the background thread (if any) ends with the block."""
        if self.exe.prefetch:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="missbench-batches")
            self._submit(start)
        try:
            yield
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)  # an in-flight draw finishes first
                self._pool, self._pending = None, None

    def _submit(self, step: int) -> None:
        assert self._pool is not None
        self._pending = (step, self._pool.submit(self._draw, step)) if step < self.stop else None

    def _draw(self, step: int) -> Batch:
        x, y, available = self.draw(step)
        return (_pinned(x), y.pin_memory(), available.pin_memory()) if self.pin else (x, y, available)

    def take(self, step: int) -> Batch:
        """Iteration ``step``'s batch on the device; steps are taken in order, each once."""
        if self._pool is None:
            x, y, available = self._draw(step)
        else:
            assert self._pending is not None and self._pending[0] == step, f"batch {step} taken out of order"
            x, y, available = self._pending[1].result()
        self._state = self.rngs.state()  # no draw in flight: the state before batch step + 1
        if self._pool is not None:
            self._submit(step + 1)
        dev = self.exe.device
        return self.exe.prepare(x), y.to(dev, non_blocking=True), available.to(dev, non_blocking=True)
