"""Backbone pieces that methods share instead of copying (3-D U-Net stages, official ShaSpec trunk)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class EncoderOutput(NamedTuple):
    """What a single-modality encoder returns.

    ``skips``: feature maps from highest resolution to lowest (excluding the bottleneck);
    ``bottleneck``: the deepest map, where ShaSpec fuses; ``pooled``: B x C global feature
    (ShaSpec's DCO classifier input).
    """

    skips: list[torch.Tensor]
    bottleneck: torch.Tensor
    pooled: torch.Tensor
