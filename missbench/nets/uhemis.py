"""U-HeMIS / U-HVED building blocks (Dorent et al., MICCAI 2019; code github.com/ReubenDo/U-HVED, MIT).

Written from ``extensions/u_hemis/u_hemis_net.py`` and ``extensions/u_hved/u_hved_net.py``
(TensorFlow 1.12 + NiftyNet) at commit f5254a8; ``methods/hemis.py`` and ``methods/uhved.py`` build
on these pieces and add their fusion rule. What the code does, and is reproduced here:

- one encoder per modality (``ConvEncoder``): a 1x1x1 conv to ``width`` (NB_CONV = 8) channels
  followed by LeakyReLU (NiftyNet ``ConvolutionalLayer`` with ``with_bn=False``), then four
  pre-activation blocks of ``n`` = w, 2w, 4w, 8w channels with a 2x max-pool after each of the first
  three. The block outputs are the four skip scales (``skip_ind = [1, 3, 5, 7]``).
- the block (``ResBlock``, its residual add commented out in the code): (InstanceNorm ->
  LeakyReLU -> conv 3x3x3) twice. Its second conv has ``n`` output channels in U-HVED's encoder
  (so each scale splits into n/2 means and n/2 log-variances) and ``n/2`` in U-HeMIS's encoder
  and in both decoders (``encoding`` / ``double_n`` branches of ``ResBlock.layer_op``);
- one decoder (``ConvDecoderImg``): starting from the deepest scale, resize (trilinear) to the next
  skip's size, concatenate that skip, block with n = 4w, 2w, w (outputs 2w, w, w/2); then a 1x1x1
  conv to the outputs. The deepest scale goes straight to the first upsampling, with no block.
- NiftyNet conventions: no conv biases anywhere (``with_bias=False`` is NiftyNet's default and the
  code never sets it), InstanceNorm with a learned scale and shift and eps 1e-6
  (``tf.contrib.layers.instance_norm``), LeakyReLU of slope 0.02 (NiftyNet's ``leaky_relu`` is
  0.51x + 0.49|x|), 'SAME' padding, He-normal weights (NiftyNet's default initialiser:
  variance scaling 2/fan_in, truncated normal), max-pool with 'SAME' padding (ceil mode).

Parameter counts at width 8 are in the method files (counted in their tests): U-HVED's encoder
count is 221,560 with affine InstanceNorm and bias-free convolutions; the eps (1e-6) is
NiftyNet's InstanceNormLayer default as remembered, not read in the NiftyNet source.

Deviation: NiftyNet's ``LinearResizeLayer`` calls TF1's ``resize_bilinear`` without half-pixel
centres (output voxel i samples input i/2, a half-voxel shift at every scale); here
``F.interpolate(mode="trilinear", align_corners=False)``, the centred grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: NiftyNet's ``leaky_relu``: (0.5 + 0.01) x + (0.5 - 0.01) |x|, i.e. slope 0.02 below zero.
LEAKY_SLOPE = 0.02
#: ``tf.contrib.layers.instance_norm``'s epsilon (NiftyNet's InstanceNormLayer default).
IN_EPS = 1e-6



def conv(c_in: int, c_out: int, kernel: int = 3) -> nn.Conv3d:
    """Bias-free 'SAME' conv (NiftyNet ConvLayer)."""
    return nn.Conv3d(c_in, c_out, kernel, padding=kernel // 2, bias=False)


class PreActBlock(nn.Sequential):
    """(IN -> LeakyReLU -> conv3) twice: ``c_in -> c_mid -> c_out`` (the code's ResBlock, no residual)."""

    def __init__(self, c_in: int, c_mid: int, c_out: int) -> None:
        super().__init__(
            nn.InstanceNorm3d(c_in, eps=IN_EPS, affine=True),
            nn.LeakyReLU(LEAKY_SLOPE),
            conv(c_in, c_mid),
            nn.InstanceNorm3d(c_mid, eps=IN_EPS, affine=True),
            nn.LeakyReLU(LEAKY_SLOPE),
            conv(c_mid, c_out),
        )


class UHeMISEncoder(nn.Module):
    """One modality's encoder: four skip maps, full resolution first.

    ``split_output=False`` (U-HeMIS): block k outputs n_k/2 channels (4, 8, 16, 32 at width 8).
    ``split_output=True`` (U-HVED): block k outputs n_k channels (8, 16, 32, 64), to be split into
    n_k/2 means and n_k/2 log-variances.
    """

    levels = 4

    def __init__(self, width: int = 8, split_output: bool = False) -> None:
        super().__init__()
        if width < 2 or width % 2:
            raise ValueError(f"U-HeMIS width {width}; expected an even number >= 2")
        self.stem = nn.Sequential(conv(1, width, 1), nn.LeakyReLU(LEAKY_SLOPE))
        self.blocks = nn.ModuleList()
        self.out_channels: list[int] = []
        c_in = width
        for k in range(self.levels):
            n = width * 2**k
            c_out = n if split_output else n // 2
            self.blocks.append(PreActBlock(c_in, n, c_out))
            self.out_channels.append(c_out)
            c_in = c_out
        self.pool = nn.MaxPool3d(2, 2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        skips = []
        for k, block in enumerate(self.blocks):
            if k:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        return skips


class UHeMISDecoder(nn.Module):
    """Resize the running map to the next skip's size (trilinear), concatenate, block; 1x1x1 conv at the end.

    ``skip_channels``: channels of the fused maps it is fed, full resolution first (U-HeMIS:
    8/16/32/64 mean+variance channels; U-HVED: 4/8/16/32 latent channels at width 8).
    """

    def __init__(self, skip_channels: list[int], out_channels: int, width: int = 8) -> None:
        super().__init__()
        levels = len(skip_channels)
        self.blocks = nn.ModuleList()
        c = skip_channels[-1]
        for k in reversed(range(levels - 1)):
            n = width * 2**k
            self.blocks.append(PreActBlock(c + skip_channels[k], n, n // 2))
            c = n // 2
        self.head = conv(c, out_channels, 1)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        x = skips[-1]
        for block, skip in zip(self.blocks, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)


def init_he_truncated(module: nn.Module) -> None:
    """NiftyNet's default ``he_normal``: truncated normal (2 std), std sqrt(2/fan_in)/0.8796 (TF1 variance scaling)."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            fan_in = m.weight[0].numel()
            std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)


def niftynet_l2(module: nn.Module, decay: float) -> torch.Tensor:
    """The code's regulariser: ``decay`` x the mean over conv kernels of sum(w^2)/2.

    NiftyNet attaches ``l2_regularizer(decay)`` to every conv kernel and the applications add
    ``reduce_mean`` over that collection (a mean over tensors, not a sum) to the loss.
    """
    terms = [0.5 * m.weight.pow(2).sum() for m in module.modules() if isinstance(m, nn.Conv3d)]
    return decay * torch.stack(terms).mean()
