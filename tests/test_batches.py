"""The batch stream (missbench/engine/batches.py): prefetching draws the same batches in the same order,
hands over the generators' state as it was before each batch, and surfaces a failed draw in order."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from missbench.core.execution import Execution
from missbench.core.training import SHASPEC_TRAINING
from missbench.engine.batches import BatchStream, SamplingRNG, draw_batch

STEPS, WARMUP, BATCH, M = 6, 2, 3, 4


class NumpyBatches:
    """`Batches` whose samples come from the numpy generator, as patches do; ``on_sample(step)`` runs first."""

    def __init__(self, rng: np.random.Generator, on_sample=lambda step: None) -> None:
        self.rng, self.on_sample = rng, on_sample

    def sample(self, step):
        self.on_sample(step)
        return torch.from_numpy(self.rng.standard_normal((BATCH, M, 2, 2, 2))).float(), torch.zeros(BATCH, 2, 2, 2, dtype=torch.long), None


def stream(prefetch: bool, on_sample=lambda step: None, seed: int = 0) -> BatchStream:
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    batches = NumpyBatches(rng, on_sample)
    return BatchStream(lambda k: draw_batch(batches, k, None, SHASPEC_TRAINING, WARMUP, gen, BATCH, M), SamplingRNG(rng, gen),
                       Execution(prefetch=prefetch), STEPS)


def drawn(s: BatchStream, start: int = 0) -> list[tuple[dict, tuple]]:
    """(handed-over generator state, batch) per iteration from ``start``."""
    out = []
    with s.running(start):
        for k in range(start, STEPS):
            state = s.rng_state()
            out.append((state, s.take(k)))
    return out


def assert_same(a: list[tuple[dict, tuple]], b: list[tuple[dict, tuple]]) -> None:
    assert len(a) == len(b)
    for (state_a, batch_a), (state_b, batch_b) in zip(a, b):
        assert state_a["numpy_rng"] == state_b["numpy_rng"]
        assert torch.equal(state_a["torch_rng"], state_b["torch_rng"])
        for x, y in zip(batch_a, batch_b):
            assert torch.equal(x, y)


def test_prefetching_draws_the_same_batches_and_hands_over_the_state_before_each():
    serial, ahead = drawn(stream(False)), drawn(stream(True))
    assert_same(serial, ahead)
    assert serial[0][1][2].all() and not serial[-1][1][2].all()  # every modality in the warm-up, dropped after it


def test_a_stream_restored_to_a_handed_over_state_continues_with_the_same_batches():
    full = drawn(stream(True))
    for prefetch in (True, False):
        resumed = stream(prefetch, seed=1)
        resumed.set_rng_state(full[3][0])
        assert_same(drawn(resumed, start=3), full[3:])


def test_the_next_batch_is_drawn_while_the_current_one_is_in_use():
    second = threading.Event()
    s = stream(True, on_sample=lambda step: second.set() if step == 1 else None)
    with s.running(0):
        s.take(0)
        assert second.wait(timeout=30), "batch 1 was not drawn in the background"


def test_a_failed_draw_surfaces_when_its_batch_is_taken():
    def fail_at_2(step):
        if step == 2:
            raise KeyboardInterrupt

    s = stream(True, on_sample=fail_at_2)
    with s.running(0):
        s.take(0)
        s.take(1)
        with pytest.raises(KeyboardInterrupt):
            s.take(2)
