"""The harness's 3-D U-Net pieces: an encoder with a width knob and a decoder fed by concatenated inputs.

The decoder follows the layout of ShaSpec's official decoder (upsample, add a 1x1x1 projection of
the concatenated skips, one residual block), so the same decoder serves methods that feed it one
map (zero_fill) or M maps per scale (ShaSpec, mean_fill).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from missbench.nets import EncoderOutput


def conv_norm_act(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv3d -> InstanceNorm3d(affine) -> LeakyReLU(0.01), the unit of nnU-Net and ShaSpec's code."""
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.InstanceNorm3d(c_out, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3x3 conv + IN with an identity shortcut, LeakyReLU after the add (ShaSpec's BasicBlock)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_norm_act(channels, channels),
            nn.Conv3d(channels, channels, 3, padding=1, bias=False),
            nn.InstanceNorm3d(channels, affine=True),
        )
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + x)


class UNetEncoder(nn.Module):
    """Stages of two conv units; stride-2 conv between stages. Channels width * 2^k, k = 0..depth."""

    def __init__(self, in_channels: int = 1, width: int = 8, depth: int = 3) -> None:
        super().__init__()
        chans = [width * 2**k for k in range(depth + 1)]
        self.stages = nn.ModuleList()
        for k, c in enumerate(chans):
            first = conv_norm_act(in_channels if k == 0 else chans[k - 1], c, stride=1 if k == 0 else 2)
            self.stages.append(nn.Sequential(first, conv_norm_act(c, c)))
        self.skip_channels = chans[:-1]
        self.bottleneck_channels = chans[-1]
        self.pooled_channels = chans[-1]
        self.downsampling = 2**depth

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return EncoderOutput(skips=maps[:-1], bottleneck=x, pooled=x.mean(dim=(2, 3, 4)))


class UNetDecoder(nn.Module):
    """Upsample, add a projection of the concatenated skips of ``n_inputs`` encoders, residual block."""

    def __init__(self, n_inputs: int, skip_channels: list[int], bottleneck_channels: int, out_channels: int) -> None:
        super().__init__()
        self.ups = nn.ModuleList()
        self.projs = nn.ModuleList()
        self.blocks = nn.ModuleList()
        c_in = n_inputs * bottleneck_channels
        for c in reversed(skip_channels):
            self.ups.append(nn.ConvTranspose3d(c_in, c, 2, stride=2, bias=False))
            self.projs.append(conv_norm_act(n_inputs * c, c, kernel=1))
            self.blocks.append(ResidualBlock(c))
            c_in = c
        self.head = nn.Conv3d(c_in, out_channels, 1)

    def forward(self, bottleneck: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = bottleneck
        for up, proj, block, skip in zip(self.ups, self.projs, self.blocks, reversed(skips)):
            x = up(x)
            if x.shape[2:] != skip.shape[2:]:
                x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = block(x + proj(skip))
        return self.head(x)


class PyramidEncoder(UNetEncoder):
    """The U-Net encoder returning its maps as one list, full resolution first and the bottleneck last.

    The form U-HeMIS-style methods fuse scale by scale (``--backbone common``).
    """

    @property
    def out_channels(self) -> list[int]:
        return [*self.skip_channels, self.bottleneck_channels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        out = super().forward(x)
        return [*out.skips, out.bottleneck]


class PyramidDecoder(UNetDecoder):
    """The U-Net decoder fed one list of fused maps per scale (``channels``: full resolution first)."""

    def __init__(self, channels: list[int], out_channels: int) -> None:
        super().__init__(1, channels[:-1], channels[-1], out_channels)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return super().forward(maps[-1], maps[:-1])
