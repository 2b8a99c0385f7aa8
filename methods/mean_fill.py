"""mean_fill: the simplest feature-level reference. Per-modality encoders; a missing modality's
features, at every scale, are the mean of the available modalities' features; one decoder.

No paper: with ``zero_fill`` it brackets what a missing-modality method must beat. It is the
ShaSpec architecture without the shared encoder, residual fusion and auxiliary losses, on the same
harness U-Net blocks (missbench/nets/unet3d.py) and ShaSpec's training defaults, so a gap between
the two is the gap the shared-specific modelling makes.

Classification: the encoders of ShaSpec's classification model (SMIL's image and audio encoders, or
the MLP for tables, each then FC -> ReLU to ``dim`` 160, so the mean is defined across modalities;
missbench/nets/classification.py), missing feature vectors filled with the mean of the available
ones, concatenated, FC 64 -> ReLU -> dropout 0.5 -> FC classes; ShaSpec's avMNIST training defaults.
110,116 parameters at avMNIST sizes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from missbench.core.method import Method, Output
from missbench.nets.fusion import fill_missing_with_mean
from missbench.core.params import Between
from missbench.core.training import SHASPEC_AVMNIST_TRAINING, SHASPEC_TRAINING
from missbench.nets import EncoderOutput
from missbench.nets.classification import ClassifierHead, projected_encoders
from missbench.nets.unet3d import UNetDecoder, UNetEncoder


class MeanFill(Method):
    name = "mean_fill"
    citation = "reference method (no paper)"
    outputs = {"segmentation": "regions", "classification": "labels"}
    defaults = {"width": 8, "depth": 3, "dim": 160, "hidden": 64}
    constraints = {key: Between(1, integer=True) for key in ("width", "depth", "dim", "hidden")}
    training_defaults = {"segmentation": SHASPEC_TRAINING, "classification": SHASPEC_AVMNIST_TRAINING}

    def __init__(self, task, modalities: tuple[str, ...], **params: Any) -> None:
        super().__init__(task, modalities, **params)
        if task.name == "classification":
            p = self.params
            self.encoders = projected_encoders(task.inputs, self.modalities, p["dim"])
            self.decoder = ClassifierHead(self.n_modalities * p["dim"], task.n_classes, p["hidden"])
            return
        self.encoders = nn.ModuleList(UNetEncoder(1, self.params["width"], self.params["depth"]) for _ in modalities)
        enc = self.encoders[0]
        self.decoder = UNetDecoder(self.n_modalities, enc.skip_channels, enc.bottleneck_channels, task.out_channels(self.output))

    def encode(self, x: torch.Tensor | list[torch.Tensor]) -> list[EncoderOutput] | list[torch.Tensor]:
        if isinstance(x, list):
            return [enc(xm) for enc, xm in zip(self.encoders, x)]
        return [enc(x[:, i : i + 1]) for i, enc in enumerate(self.encoders)]

    def decode(self, features: list[EncoderOutput] | list[torch.Tensor], available: torch.Tensor,
               target: torch.Tensor | None = None) -> Output:
        def fused(maps: list[torch.Tensor]) -> torch.Tensor:
            return fill_missing_with_mean(torch.stack(maps, 1), available).flatten(1, 2)

        if isinstance(features[0], torch.Tensor):  # classification: feature vectors
            logits = self.decoder(fused(features))
        else:
            skips = [fused([f.skips[k] for f in features]) for k in range(len(features[0].skips))]
            logits = self.decoder(fused([f.bottleneck for f in features]), skips)
        return Output(logits)
