"""zero_fill: the honest floor. A plain 3-D U-Net on the M-channel input with missing channels zeroed.

No paper: the reference every missing-modality method must beat. It uses the harness's U-Net
(missbench/nets/unet3d.py) at the same width as ShaSpec's default backbone and ShaSpec's training
defaults (SGD, random-subset dropping with a full-modality warm-up), so only the mechanism differs.
It cannot share encoder work across subsets: its one encoder sees all modalities at once.

Classification: modalities differ in shape, so there is no early fusion of the raw inputs; each
modality's encoder (SMIL's image and audio encoders, the MLP for tables; missbench/nets/
classification.py) reads its zeroed input, and the features are concatenated into FC 64 -> ReLU ->
dropout 0.5 -> FC classes: SMIL's fusion model (``SoundLenet5New`` in mode 'two') with nothing done
about missing modalities, 43,236 parameters at avMNIST sizes. It trains with ShaSpec's avMNIST
defaults. No shared encoding either: a missing modality's feature is its encoder's output on zeros.
"""

from __future__ import annotations

from typing import Any

import torch

from missbench.core.method import Method, Output
from missbench.core.params import Between
from missbench.core.training import SHASPEC_AVMNIST_TRAINING, SHASPEC_TRAINING
from missbench.nets.classification import ClassifierHead, encoders_for
from missbench.nets.unet3d import UNetDecoder, UNetEncoder


class ZeroFill(Method):
    name = "zero_fill"
    citation = "reference method (no paper)"
    outputs = {"segmentation": "regions", "classification": "labels"}
    defaults = {"width": 8, "depth": 3, "hidden": 64}
    constraints = {key: Between(1, integer=True) for key in ("width", "depth", "hidden")}
    training_defaults = {"segmentation": SHASPEC_TRAINING, "classification": SHASPEC_AVMNIST_TRAINING}

    def __init__(self, task, modalities: tuple[str, ...], **params: Any) -> None:
        super().__init__(task, modalities, **params)
        if task.name == "classification":
            self.encoders = encoders_for(task.inputs, self.modalities)
            self.head = ClassifierHead(sum(e.out_features for e in self.encoders), task.n_classes, self.params["hidden"])
            return
        self.encoder = UNetEncoder(self.n_modalities, self.params["width"], self.params["depth"])
        enc = self.encoder
        self.decoder = UNetDecoder(1, enc.skip_channels, enc.bottleneck_channels, task.out_channels(self.output))

    def forward(self, x: torch.Tensor | list[torch.Tensor], available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        if isinstance(x, list):
            return Output(self.head(torch.cat([enc(xm) for enc, xm in zip(self.encoders, x)], 1)))
        feats = self.encoder(x)
        return Output(self.decoder(feats.bottleneck, feats.skips))
