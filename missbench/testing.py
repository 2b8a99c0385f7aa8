"""What a method author's tests need (the checks `bench.py check` runs, as assertions): import them in a test
of your own method, e.g. ``from missbench.testing import assert_every_pattern_ignores_missing, toy_losses``.

    model = method_class("late_fusion")(get_task("segmentation"), MODS, width=4).eval()
    assert_every_pattern_ignores_missing(model, 3, masks_itself=True)   # 3 region channels
    assert toy_losses(model)[-1]["total"] < toy_losses(model)[0]["total"]
"""

from __future__ import annotations

import torch

from missbench.engine import contract
from missbench.engine.contract import classification_batch as tiny_classification_batch
from missbench.engine.contract import segmentation_batch as tiny_batch

#: The segmentation modalities of the toy data (FLAIR, T1, T1c, T2).
MODS = contract.SEGMENTATION_MODALITIES

__all__ = ["MODS", "assert_classification_ignores_missing", "assert_every_pattern_ignores_missing",
           "assert_shared_encoding_matches", "classification_task", "classification_toy_losses", "tiny_batch",
           "tiny_classification_batch", "toy_losses"]


def assert_shared_encoding_matches(model: torch.nn.Module, **tolerance: float) -> None:
    """Encoding once and decoding per subset gives what one full pass per subset gives, for all 15 subsets
    (`missbench.engine.contract.check_shared_encoding`, as `bench.py check` runs it)."""
    assert contract.check_shared_encoding(model, tiny_batch()[0], **tolerance), "the method has no shared encoding"


def assert_every_pattern_ignores_missing(model: torch.nn.Module, out_channels: int, masks_itself: bool = False) -> None:
    """For each of the 15 availability patterns: logits of the right shape (``out_channels``: the channels the
    test expects), and inputs that differ only, and by a lot, in the missing modalities give the same
    predictions through the harness's inference; with ``masks_itself``, also through the method's own
    forward on the raw inputs (`missbench.engine.contract`'s checks, as `bench.py check` runs them)."""
    assert model.task.out_channels(model.output) == out_channels
    x, _ = tiny_batch()
    contract.check_patterns(model, x)
    contract.check_ignores_missing(model, x, masks_itself)


def toy_losses(model: torch.nn.Module, steps: int = 60) -> list[dict[str, float]]:
    """Named loss terms and total per step of Adam (3e-3) on a tiny case whose FLAIR shows the tumour, each
    step with a random availability per sample (seeded, never empty; FLAIR kept in the first sample so the
    task stays learnable), zeroed as the harness does; the method's stages are not fit. Every term must be
    finite at every step (`missbench.engine.contract.toy_training`)."""
    x, y = contract.toy_batch(model.task)
    return contract.toy_training(model, x, y, contract.random_availability(x.shape[0], x.shape[1]), steps, stages=False)


def classification_task(modalities: tuple[str, ...] = ("image", "audio"), n_classes: int = 4):
    """The classification task on the toy inputs (image, audio spectrogram, table row) named in ``modalities``."""
    return contract.toy_task("classification", modalities, n_classes)[0]


def assert_classification_ignores_missing(model: torch.nn.Module, task, masks_itself: bool = False) -> None:
    """For every non-empty availability pattern the logits are B x n_classes, and inputs that differ only, and
    by a lot, in the missing modalities give the same predictions through the harness's inference and, with
    ``masks_itself``, through the method's own forward on the raw inputs (`missbench.engine.contract`)."""
    x, _ = tiny_classification_batch(task)
    contract.check_patterns(model, x)
    contract.check_ignores_missing(model, x, masks_itself)


def classification_toy_losses(model: torch.nn.Module, task, steps: int = 40, batch: int = 16) -> list[float]:
    """Total loss per step of Adam (3e-3) on `tiny_classification_batch`, about a third of the slots missing
    (the same slots at every step); the method's stages are not fit."""
    x, y = tiny_classification_batch(task, batch)
    available = torch.rand(batch, len(x), generator=torch.Generator().manual_seed(0)) > 0.35
    available[~available.any(1), 0] = True
    history = contract.toy_training(model, x, y, lambda step: available, steps, stages=False)
    return [h["total"] for h in history]
