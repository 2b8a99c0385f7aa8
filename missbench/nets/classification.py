"""Classification encoders and head that methods share: SMIL's image and audio encoders, an MLP for tables;
and the mean-of-available fill of missing per-modality features (vectors here, maps on segmentation).

Sizes follow SMIL's official code (github.com/mengmenm/SMIL, src/models/lenet5.py ``LeNet5``,
src/models/snet.py ``SNetPluse``, src/models/soundlenet5.py ``SoundLenet5New``), which ShaSpec's
avMNIST model reuses (ShaSpec paper §4.2). Each encoder maps one modality's batch (B x shape) to a
B x ``out_features`` vector; the encoders' own classification heads in SMIL (LeNet5's 160->32->10,
SNetPluse's 320->160->32->10) are left out, since only their features are fused.

``encoder_for(kind, shape)`` picks the encoder for an input kind of the classification task
("image", "spectrogram", "tabular"); ``encoders_for(inputs, modalities)`` builds one per modality.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from missbench.core.tasks.classification import KINDS




class LeNetImageEncoder(nn.Module):
    """SMIL's LeNet-5 variant (lenet5.py): conv 5x5 C->5, max-pool 2, ReLU, conv 5x5 5->10, dropout 0.5,
    max-pool 2, ReLU, flattened: 160 features at 1 x 28 x 28 (1,390 parameters).

    An adaptive max-pool to 4 x 4 ends the stack: the identity at 28 x 28, it keeps the feature at
    160 for larger images (at least 16 x 16).
    """

    def __init__(self, in_channels: int = 1, dropout: float = 0.5) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 5, 5), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(5, 10, 5), nn.Dropout(dropout), nn.MaxPool2d(2), nn.ReLU(),
            nn.AdaptiveMaxPool2d(4), nn.Flatten(),
        )
        self.out_features = 10 * 4 * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MFCCAudioEncoder(nn.Module):
    """SMIL's audio encoder ``SNetPluse`` (snet.py): three 2x2 convs C->32->48->20, each with BatchNorm and
    ReLU, max-pool k2 stride 4, dropout 0.25, flattened: 320 features at 1 x 20 x 20 (10,412 parameters).

    An adaptive max-pool to 4 x 4 follows the stride-4 pool: the identity at 20 x 20, it keeps the
    feature at 320 for larger maps (at least 17 x 17).
    """

    def __init__(self, in_channels: int = 1, dropout: float = 0.25) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in ((in_channels, 32), (32, 48), (48, 20)):
            layers += [nn.Conv2d(c_in, c_out, 2), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.MaxPool2d(2, stride=4), nn.AdaptiveMaxPool2d(4), nn.Dropout(dropout), nn.Flatten())
        self.out_features = 20 * 4 * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPEncoder(nn.Module):
    """Tabular rows (B x D): Linear D->hidden, ReLU, dropout, Linear hidden->out, ReLU.

    No paper fixes this one (SMIL and ShaSpec have no tabular input); a two-layer MLP is the usual
    tabular branch of image + table models (e.g. CMML's clinical branch).
    """

    def __init__(self, in_features: int, hidden: int = 64, out_features: int = 64, dropout: float = 0.25) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_features), nn.ReLU()
        )
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class ClassifierHead(nn.Sequential):
    """FC -> ReLU -> dropout -> FC: SMIL's fusion head (SoundLenet5New: 480 -> 64 -> 10, ``nn.Dropout()``
    p 0.5) and ShaSpec's "2 FC layers with dropout" (paper §4.2)."""

    def __init__(self, in_features: int, n_classes: int, hidden: int = 64, dropout: float = 0.5) -> None:
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes))
        self.in_features, self.hidden = in_features, hidden



def encoder_for(kind: str, shape: Sequence[int], tabular_hidden: int = 64, tabular_features: int = 64) -> nn.Module:
    """The encoder for one input of the classification task; ``shape`` excludes the batch dimension.

    image: ``LeNetImageEncoder`` on C x H x W (H, W >= 16); spectrogram: ``MFCCAudioEncoder`` on
    C x H x W (H, W >= 17); tabular: ``MLPEncoder`` on (D,). Every encoder has ``out_features``.
    """
    shape = tuple(int(s) for s in shape)
    if kind not in KINDS:
        raise ValueError(f"unknown input kind {kind!r}; expected one of {list(KINDS)}")
    if kind == "tabular":
        if len(shape) != 1 or shape[0] < 1:
            raise ValueError(f"tabular input shape {shape}; expected (D,) with D >= 1")
        return MLPEncoder(shape[0], tabular_hidden, tabular_features)
    least = 16 if kind == "image" else 17
    if len(shape) != 3 or min(shape[1:]) < least:
        raise ValueError(f"{kind} input shape {shape}; expected (C, H, W) with H, W >= {least}")
    return (LeNetImageEncoder if kind == "image" else MFCCAudioEncoder)(shape[0])


def encoders_for(inputs: Mapping[str, Any], modalities: Sequence[str], **options: int) -> nn.ModuleList:
    """One encoder per modality, in ``modalities`` order, from the task's ``inputs`` (name -> InputSpec)."""
    missing = [m for m in modalities if m not in inputs]
    if missing:
        raise ValueError(f"modality {missing[0]!r} has no input spec; the task describes {list(inputs)}")
    return nn.ModuleList(encoder_for(*inputs[m], **options) for m in modalities)


def projected_encoders(inputs: Mapping[str, Any], modalities: Sequence[str], dim: int) -> nn.ModuleList:
    """Per modality, its encoder then FC -> ReLU to ``dim`` features, so every modality's feature has one size
    (ShaSpec's specific encoders, paper §4.2: "convolutional layers and FC layers"; mean_fill)."""
    return nn.ModuleList(
        nn.Sequential(enc, nn.Linear(enc.out_features, dim), nn.ReLU()) for enc in encoders_for(inputs, modalities)
    )


class SharedEncoder(nn.Module):
    """One encoder for every modality (ShaSpec's f_sha), whatever their shapes: ``dim`` features.

    If every input is 2-D (image, spectrogram), each is resized (bilinear) to the first one's H x W and
    zero-padded to the most channels, then SMIL's LeNet-5 encoder and FC -> ReLU. With a tabular input,
    each 2-D input is average-pooled to 8 x 8 and flattened, every row zero-padded to the longest, then
    the MLP encoder. ShaSpec does not say how its one shared encoder reads a 28 x 28 image and a 20 x 20
    MFCC map (paper §4.2; the code is unreleased); resizing to a common grid is the plain reading.
    """

    POOLED = 8

    def __init__(self, inputs: Mapping[str, Any], modalities: Sequence[str], dim: int) -> None:
        super().__init__()
        specs = [(kind, tuple(shape)) for kind, shape in (inputs[m] for m in modalities)]
        self.grid = all(kind != "tabular" for kind, _ in specs)
        if self.grid:
            self.channels, self.size = max(shape[0] for _, shape in specs), specs[0][1][1:]
            body: nn.Module = encoder_for("image", (self.channels, *self.size))
        else:
            self.length = max(shape[0] if kind == "tabular" else shape[0] * self.POOLED**2 for kind, shape in specs)
            body = encoder_for("tabular", (self.length,))
        self.net = nn.Sequential(body, nn.Linear(body.out_features, dim), nn.ReLU())
        self.out_features = dim

    def common(self, x: torch.Tensor) -> torch.Tensor:
        """One modality's batch in the common input form."""
        if self.grid:
            if tuple(x.shape[2:]) != tuple(self.size):
                x = F.interpolate(x, size=tuple(self.size), mode="bilinear", align_corners=False)
            return F.pad(x, (0, 0, 0, 0, 0, self.channels - x.shape[1]))
        if x.ndim == 4:
            x = F.adaptive_avg_pool2d(x, self.POOLED)
        x = x.flatten(1)
        return F.pad(x, (0, self.length - x.shape[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.common(x))

