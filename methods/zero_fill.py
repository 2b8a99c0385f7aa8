"""zero_fill: the honest floor. A plain 3-D U-Net on the M-channel input with missing channels zeroed.

No paper: the reference every missing-modality method must beat. It uses the harness's U-Net
(missbench/nets/unet3d.py) at the same width as ShaSpec's default backbone and ShaSpec's training
defaults (SGD, random-subset dropping with a full-modality warm-up), so only the mechanism differs.
It cannot share encoder work across subsets: its one encoder sees all modalities at once.
"""

from __future__ import annotations

from typing import Any

import torch

from missbench.method import SHASPEC_TRAINING, Method, Output
from missbench.nets.unet3d import UNetDecoder, UNetEncoder


class ZeroFill(Method):
    name = "zero_fill"
    citation = "reference method (no paper)"
    tasks = ("segmentation",)
    output = "regions"
    defaults = {"width": 8, "depth": 3}
    training = SHASPEC_TRAINING

    def __init__(self, task, modalities: tuple[str, ...], **params: Any) -> None:
        super().__init__(task, modalities, **params)
        self.encoder = UNetEncoder(self.n_modalities, self.params["width"], self.params["depth"])
        enc = self.encoder
        self.decoder = UNetDecoder(1, enc.skip_channels, enc.bottleneck_channels, task.out_channels(self.output))

    def forward(self, x: torch.Tensor, available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        feats = self.encoder(x)
        out = Output(self.decoder(feats.bottleneck, feats.skips))
        if target is not None:
            out.losses.update(self.task_loss(out.logits, target))
        return out
