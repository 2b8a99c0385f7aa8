"""mean_fill: the simplest feature-level reference. Per-modality encoders; a missing modality's
features, at every scale, are the mean of the available modalities' features; one decoder.

No paper: with ``zero_fill`` it brackets what a missing-modality method must beat. It is the
ShaSpec architecture without the shared encoder, residual fusion and auxiliary losses, on the same
harness U-Net blocks (missbench/nets/unet3d.py) and ShaSpec's training defaults, so a gap between
the two is the gap the shared-specific modelling makes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from missbench.method import SHASPEC_TRAINING, Method, Output
from missbench.nets import EncoderOutput
from missbench.nets.unet3d import UNetDecoder, UNetEncoder


def fill_missing_with_mean(maps: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """B x M x C x ... per-modality maps with each missing modality's map replaced by the mean of the available ones."""
    avail = available.to(maps.device, maps.dtype).view(*available.shape, *[1] * (maps.ndim - 2))
    mean = (maps * avail).sum(1, keepdim=True) / avail.sum(1, keepdim=True).clamp_min(1)
    return torch.where(avail.bool(), maps, mean)


class MeanFill(Method):
    name = "mean_fill"
    citation = "reference method (no paper)"
    tasks = ("segmentation",)
    output = "regions"
    defaults = {"width": 8, "depth": 3}
    training = SHASPEC_TRAINING

    def __init__(self, task, modalities: tuple[str, ...], **params: Any) -> None:
        super().__init__(task, modalities, **params)
        self.encoders = nn.ModuleList(UNetEncoder(1, self.params["width"], self.params["depth"]) for _ in modalities)
        enc = self.encoders[0]
        self.decoder = UNetDecoder(self.n_modalities, enc.skip_channels, enc.bottleneck_channels, task.out_channels(self.output))

    def encode(self, x: torch.Tensor) -> list[EncoderOutput]:
        return [enc(x[:, i : i + 1]) for i, enc in enumerate(self.encoders)]

    def decode(self, features: list[EncoderOutput], available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        def fused(maps: list[torch.Tensor]) -> torch.Tensor:
            return fill_missing_with_mean(torch.stack(maps, 1), available).flatten(1, 2)

        skips = [fused([f.skips[k] for f in features]) for k in range(len(features[0].skips))]
        out = Output(self.decoder(fused([f.bottleneck for f in features]), skips))
        if target is not None:
            out.losses.update(self.task_loss(out.logits, target))
        return out
