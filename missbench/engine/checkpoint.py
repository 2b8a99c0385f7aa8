"""Training checkpoints: the whole state at an iteration boundary (model, optimiser, step, every RNG,
the method's stages, frozen parameters, model selection), written atomically into the run folder, and
the live snapshot a preemption handler saves between periodic checkpoints. The batch generators' state
comes from the `BatchStream` (as it was before the boundary's batch was drawn, even when a background
thread has drawn it already).

A resumed run gives the numbers an uninterrupted one gives. Parameters and optimiser change only in
``optimizer.step()``, so between the start of an iteration and that call, the live state plus the
iteration's starting RNG states and buffers are that iteration's starting state: `Checkpointer.mark`
snapshots what changes earlier (RNGs, buffers), `Checkpointer.mid_update` says the window closed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

from missbench.core.method import Method
from missbench.engine.batches import BatchStream
from missbench.engine.selection import Selection
from missbench.store.run_folder import ModelFolder

log = logging.getLogger("missbench")

#: The checkpointer of the training running in this process, while it runs (see `save_live_state`): the package's
#: one piece of module state, because submitit's preemption handler is called with the job, not the training.
_live: "Checkpointer | None" = None


class Checkpointer:
    """Saves and restores one training's state in ``folder``."""

    def __init__(self, folder: ModelFolder, method: Method, optimizer: torch.optim.Optimizer, batches: BatchStream,
                 selection: Selection | None) -> None:
        self.folder, self.method, self.optimizer, self.batches, self.selection = folder, method, optimizer, batches, selection
        self.buffer_names = set(method.state_dict()) - {n for n, _ in method.named_parameters()}
        self.boundary: dict[str, Any] = {}

    def restore(self, map_location: torch.device) -> tuple[int, int]:
        """Load the saved state, if any; returns (step, stages done), (0, 0) for a fresh start."""
        state = self.folder.load_checkpoint(map_location)
        if state is None:
            return 0, 0
        fresh = {k: v.clone() for k, v in self.method.state_dict().items()}
        try:
            self.method.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.batches.set_rng_state({k: state[k] for k in ("numpy_rng", "torch_rng")})
            torch.set_rng_state(state["torch_global_rng"])
        except (RuntimeError, KeyError, ValueError, TypeError) as e:  # it reads, but it is not this model's state
            self.method.load_state_dict(fresh)
            self.folder.set_aside_checkpoint(f"it does not fit the model ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
            return 0, 0
        frozen = set(state["frozen"])
        for name, p in self.method.named_parameters():
            if name in frozen:
                p.requires_grad_(False)
        if self.selection is not None and state["selection"]:
            self.selection.load(state["selection"])
        log.info("resumed from %s at iteration %d", self.folder.checkpoint_path, state["step"])
        return state["step"], state["stages_done"]

    def save(self, step: int, stages_done: int, **captured: Any) -> None:
        """Write the current state; ``captured`` replaces parts taken at the iteration boundary."""
        self.folder.save_checkpoint({
            "model": self.method.state_dict(), "optimizer": self.optimizer.state_dict(), "step": step,
            **self.batches.rng_state(), "torch_global_rng": torch.get_rng_state(),
            "stages_done": stages_done, "frozen": [n for n, p in self.method.named_parameters() if not p.requires_grad],
            "selection": self.selection.state() if self.selection is not None else None,
        } | captured)

    def mark(self, step: int, stages_done: int) -> None:
        """Snapshot what changes before the optimiser step: the start of iteration ``step``."""
        buffers = {k: v.clone() for k, v in self.method.state_dict().items() if k in self.buffer_names}
        self.boundary = {"step": step, "stages_done": stages_done, **self.batches.rng_state(),
                         "torch_global_rng": torch.get_rng_state(), "buffers": buffers}

    def mid_update(self) -> None:
        """From here until the next `mark` the live state is mid-update and cannot be saved."""
        self.boundary = {}

    def save_boundary(self) -> bool:
        """Save the state at the last iteration boundary; False when there is none to save."""
        if not self.boundary:
            return False
        b = dict(self.boundary)
        step, stages_done, buffers = b.pop("step"), b.pop("stages_done"), b.pop("buffers")
        self.save(step, stages_done, model=self.method.state_dict() | buffers, **b)
        log.info("saved the state at iteration %d on request", step)
        return True

    @contextlib.contextmanager
    def live(self) -> Iterator[None]:
        """Make this the checkpointer `save_live_state` uses, for the duration (also when training raises)."""
        global _live
        _live = self
        try:
            yield
        finally:
            _live = None


def final_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a finished training state scores: those model selection kept, else the last ones."""
    selection = state.get("selection") or {}
    return selection.get("best_model") or state["model"]


def save_live_state() -> bool:
    """Write the running training's state at its last iteration boundary to its checkpoint.pt.

    For a preemption signal handler (missbench/executors/task.py). Returns False, leaving the last
    periodic checkpoint as it is, when no training runs or the optimiser is mid-update; either way a
    resume gives the numbers of an uninterrupted run."""
    return _live.save_boundary() if _live is not None else False
