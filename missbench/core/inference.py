"""Inference over subsets: one batch of windows or samples to one probability map per evaluation subset.

Methods that encode each modality on its own are encoded once per batch: the features of an
available modality are the same in every subset that contains it, and a missing modality's are
those of an all-zero input (the harness zeroes missing inputs), computed once per input shape. Only
fusion and decoding run per subset. Other methods run one full pass per subset.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from missbench.core.availability import Inputs, batch_size, device, shape_key, zero_inputs, zeros_like
from missbench.core.execution import PhaseTimer
from missbench.core.method import Method
from missbench.core.subsets import Subset

Predictor = Callable[[Inputs], list[torch.Tensor]]


def subset_predictor(method: Method, subsets: list[Subset], shared: bool = True, timer: PhaseTimer | None = None) -> Predictor:
    """A function mapping a batch (B x M x ..., or a list of per-modality batches) to one probability
    map per subset.

    The features of an all-zero batch are cached per shape for the predictor's lifetime. With a
    ``timer``, encoding, decoding and plain forward passes are timed as phases.
    """
    timer = timer or PhaseTimer()
    masks = torch.tensor([s.mask for s in subsets])
    zero_cache: dict[tuple, list] = {}

    def plain(x: Inputs) -> list[torch.Tensor]:
        outs = []
        for mask in masks:
            avail = mask.expand(batch_size(x), -1).to(device(x))
            with timer.phase("forward"):
                logits = method(zero_inputs(x, avail), avail).logits
            outs.append(method.task.probabilities(logits, method.output))
        return outs

    def shared_encoding(x: Inputs) -> list[torch.Tensor] | None:
        with timer.phase("encode"):
            feats = method.encode(x)
        if feats is None:
            return None
        key = shape_key(x)
        if key not in zero_cache:
            zero_cache[key] = method.encode(zeros_like(x))
        zeros = zero_cache[key]
        outs = []
        for mask in masks:
            avail = mask.expand(batch_size(x), -1).to(device(x))
            mixed = [f if a else z for f, z, a in zip(feats, zeros, mask.tolist())]
            with timer.phase("decode"):
                logits = method.decode(mixed, avail).logits
            outs.append(method.task.probabilities(logits, method.output))
        return outs

    def predict(x: Inputs) -> list[torch.Tensor]:
        if shared:
            outs = shared_encoding(x)
            if outs is not None:
                return outs
        return plain(x)

    return predict
