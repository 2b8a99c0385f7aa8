"""The official ShaSpec BraTS backbone: 3-D ResNet-50 + ASPP encoder and a U-shaped decoder.

Source: Wang, Chen, Ma, Avery, Hull, Carneiro, "Multi-modal Learning with Missing Modality via
Shared-Specific Feature Modelling", CVPR 2023 (arXiv 2307.14126), §4.2 ("3D UNet ... fusion at the
bottom"), and the architecture the official code actually builds, github.com/billhhh/ShaSpec
(``DualNet_SS.py``: ``U_Res3D_enc``, ``ASPP``, ``U_Res3D_dec``; ``Res50.py``: ``Conv3d_wd``,
``Bottleneck``, ``BasicBlock``, ``ResNet``). This is an independent re-implementation from the
described architecture, not a copy of that code. It is configured like the code's defaults
(``norm_cfg='IN'``, ``activation_cfg='LeakyReLU'``, ``weight_std=True``).

Encoder (one per input modality stream, 1-channel input), shapes for an 80x160x160 patch:

* stem: WSConv3d 7^3, stride (1,2,2), pad 3 -> 64, InstanceNorm3d(affine) + LeakyReLU(0.01)
  (80x80x80); this map is skip 0;
* maxpool 3^3, stride 2, pad 1 (40^3);
* layer1..4: 3/4/6/3 bottlenecks with planes 64/128/256/**320** (out 256/512/1024/1280) and
  strides 1/2/2/2. Bottleneck = 1x1 -> IN -> act, 3^3 (the stride sits here) -> IN -> act,
  1x1 (x4 expansion) -> IN, + shortcut, act. The first bottleneck of *every* layer, layer1
  included, has a 1x1 projection shortcut (WSConv3d with the layer stride + IN): the official
  ``stride != 1`` test compares a tuple with an int and is always true;
* reduce: 1x1 1280 -> 256 + IN + act (5^3);
* ASPP(256): 1x1 branch, three 3^3 branches with dilation (= padding) 2/4/8, a global branch
  (1x1 conv on the spatially averaged map, IN, act, broadcast back), each branch 256 ch with
  IN + act; concat 5x256 -> 1x1 -> 256 + IN + act.

``forward`` returns ``EncoderOutput(skips=[stem, layer1, layer2, layer3], bottleneck=ASPP output,
pooled=spatial mean of the 256-ch *reduced* map (pre-ASPP), B x 256)`` -- the official encoder
returns the ASPP output and that mean (``global_f``, the DCO classifier input) and keeps the
ResNet's stage maps for the decoder skips.

Decoder (``U_Res3D_dec``): input = the M fused bottleneck maps concatenated (M*256 ch) plus, per
scale, the M modalities' skip maps concatenated. Four stages, each ConvTranspose3d k2 s2 (no bias;
M*256->256->128->64->32) + a skip projection (WSConv3d 1x1 + IN + act; layer3 M*1024->256,
layer2 M*512->128, layer1 M*256->64, stem M*64->32), added, then one residual BasicBlock (two
3^3 WSConv3d + IN, act, identity shortcut). Then a *plain* (not weight-standardised, as in the
official ``cls_conv``) bias-free 1x1 Conv3d 32->out_channels and trilinear upsampling x(1,2,2)
(``align_corners=False``, as ``nn.Upsample``) to undo the stem's in-plane stride.

All convolutions are bias-free; conv and transposed-conv weights use Kaiming-normal
(``mode='fan_out'``, PyTorch's default gain sqrt(2)), IN affine weight 1 / bias 0, as in the code.

Parameter counts at the official sizes (checked in ``tests/test_resnet3d.py``): one encoder
35,127,872 (ResNet trunk 29,029,440 + reduce/ASPP 6,098,432); decoder with M=4, 3 outputs
8,528,800.

Deviations from the official code (none change the parameter count or the function computed at
the official training sizes):

1. ASPP global branch. The official code applies ``nn.InstanceNorm3d`` to the 1x1x1 pooled map.
   Current PyTorch refuses that ("Expected more than 1 spatial element"); the authors deleted
   torch's size check. With a single voxel, x - mean(x) == 0 exactly and var == 0, so the norm
   outputs exactly its affine bias beta, whatever the input; the branch's output is
   LeakyReLU(beta) broadcast over the map, and its conv weight and the norm's gamma get zero
   gradient. Here the norm is :class:`SpatialInstanceNorm3d`, which is the same instance-norm
   formula (biased variance, eps=1e-5, affine gamma/beta) written without the size check. So the
   branch keeps the official 1x1 conv (65,536 weights) and gamma/beta (2x256): identical forward,
   identical gradients, identical parameter count. (Strictly, torch's own instance-norm kernel
   -- what the official code runs -- leaves x - mean(x) at about one float ulp of x instead of 0,
   which 1/sqrt(eps) ~ 316 amplifies to ~3e-5 * |x| of input-dependent rounding noise around
   beta; here the result is exactly beta. In float64 the two agree to ~1e-13.) (Equivalently one could keep only beta, but
   then the count would drop by 65,792.)
2. Sizes. The official decoder assumes every size divides exactly (patches with D % 16 == 0 and
   H, W % 32 == 0). Here, when a transposed-conv output and its skip differ in size (odd sizes
   on the way down), the upsampled map is trilinearly resized to the skip's size; the final
   upsampling can target an explicit ``output_size`` (e.g. the input's), else it is the official
   x(1,2,2). At sizes the official code supports, nothing changes.
3. LeakyReLUs are not in-place (the official ones are); same values.
4. The weight standardisation is written with a single mean over (in, kd, kh, kw) instead of
   four chained means over equal-sized groups -- the same number up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from missbench.nets import EncoderOutput

__all__ = [
    "WSConv3d",
    "SpatialInstanceNorm3d",
    "Bottleneck3d",
    "BasicBlock3d",
    "ASPP3d",
    "ResNet3dEncoder",
    "ResNet3dDecoder",
]

_LRELU_SLOPE = 1e-2


class WSConv3d(nn.Conv3d):
    """Weight-standardised 3-D convolution (official ``Conv3d_wd``), bias-free by default.

    Effective kernel, per output channel o: ``w_hat = (w - mean) / sqrt(var + eps)``, where mean
    and var are over the (in, kd, kh, kw) entries of channel o, var is the *unbiased* (n-1)
    variance (``torch.var`` default) and ``eps = 1e-12`` sits *inside* the square root -- the
    official formula (its ``std(...) + 1e-5`` variant is commented out).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = False,
        eps: float = 1e-12,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding,
            dilation=dilation, groups=groups, bias=bias,
        )
        self.eps = eps

    def standardized_weight(self) -> torch.Tensor:
        w = self.weight
        w = w - w.mean(dim=(1, 2, 3, 4), keepdim=True)
        var = w.flatten(1).var(dim=1)  # unbiased, as torch.var's default in the official code
        return w / torch.sqrt(var + self.eps).view(-1, 1, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)


class SpatialInstanceNorm3d(nn.Module):
    """Affine instance norm over (D, H, W) per sample and channel, with no minimum-size check.

    The same computation as ``nn.InstanceNorm3d(c, affine=True)`` (biased variance, eps inside
    the square root, no running statistics), but it also accepts a 1x1x1 map, where it returns
    exactly ``beta`` -- what the official code computes with torch's size check removed.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.dim()))
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, unbiased=False, keepdim=True)
        y = (x - mean) / torch.sqrt(var + self.eps)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return y * self.weight.view(shape) + self.bias.view(shape)


def _norm(channels: int) -> nn.InstanceNorm3d:
    return nn.InstanceNorm3d(channels, affine=True)


def _act() -> nn.LeakyReLU:
    return nn.LeakyReLU(negative_slope=_LRELU_SLOPE)


def _conv_norm_act(cin: int, cout: int, kernel_size: int = 1, padding: int = 0, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        WSConv3d(cin, cout, kernel_size, padding=padding, dilation=dilation), _norm(cout), _act()
    )


def _init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan_out) for every (transposed) conv, IN gamma 1 / beta 0 (as the code)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.InstanceNorm3d, SpatialInstanceNorm3d)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Bottleneck3d(nn.Module):
    """ResNet bottleneck: 1x1 -> 3^3 (stride here) -> 1x1 (x4), IN after each, add, LeakyReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride=1, project: bool = False) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = WSConv3d(inplanes, planes, 1)
        self.norm1 = _norm(planes)
        self.conv2 = WSConv3d(planes, planes, 3, stride=stride, padding=1)
        self.norm2 = _norm(planes)
        self.conv3 = WSConv3d(planes, out, 1)
        self.norm3 = _norm(out)
        self.act = _act()
        self.shortcut = (
            nn.Sequential(WSConv3d(inplanes, out, 1, stride=stride), _norm(out)) if project else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.act(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        residual = x if self.shortcut is None else self.shortcut(x)
        return self.act(y + residual)


class BasicBlock3d(nn.Module):
    """Residual block: 3^3 -> IN -> act -> 3^3 -> IN, + identity, act (official ``BasicBlock``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = WSConv3d(channels, channels, 3, padding=1)
        self.norm1 = _norm(channels)
        self.conv2 = WSConv3d(channels, channels, 3, padding=1)
        self.norm2 = _norm(channels)
        self.act = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act(y + x)


class _GlobalBranch(nn.Module):
    """ASPP image-level branch: mean over space -> 1x1 WSConv3d -> IN -> act -> broadcast.

    The norm sees a 1x1x1 map, so its output is exactly its bias beta and the branch returns
    ``LeakyReLU(beta)`` everywhere, independent of the input (see the module docstring).
    """

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.conv = WSConv3d(channels_in, channels_out, 1)
        self.norm = SpatialInstanceNorm3d(channels_out)
        self.act = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.mean(dim=(2, 3, 4), keepdim=True)
        g = self.act(self.norm(self.conv(g)))
        # The official trilinear interpolation (align_corners=True) of a 1x1x1 map is a broadcast.
        return g.expand(-1, -1, *x.shape[2:])


class ASPP3d(nn.Module):
    """Atrous spatial pyramid pooling as in the official ``ASPP`` (``weight_std=True``, IN)."""

    def __init__(self, channels_in: int = 256, channels_out: int = 256, dilations: Sequence[int] = (2, 4, 8)) -> None:
        super().__init__()
        self.branch1 = _conv_norm_act(channels_in, channels_out, 1)
        self.dilated = nn.ModuleList(
            _conv_norm_act(channels_in, channels_out, 3, padding=d, dilation=d) for d in dilations
        )
        self.global_branch = _GlobalBranch(channels_in, channels_out)
        n_branches = 2 + len(dilations)
        self.project = _conv_norm_act(n_branches * channels_out, channels_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.branch1(x)] + [b(x) for b in self.dilated] + [self.global_branch(x)]
        return self.project(torch.cat(feats, dim=1))


class ResNet3dEncoder(nn.Module):
    """Official ShaSpec single-modality encoder: 3-D ResNet-50 (layer4 planes 320) + reduce + ASPP.

    Input B x ``in_channels`` x D x H x W with D divisible by 16 and H, W by 32 for the decoder's
    exact size arithmetic (other sizes work, the decoder resizes). Returns
    :class:`~missbench.nets.EncoderOutput` with ``skips`` = [stem (64, D x H/2 x W/2),
    layer1 (256, /2 of that), layer2 (512, /4), layer3 (1024, /8)], ``bottleneck`` = ASPP output
    (256, /16 of the stem map) and ``pooled`` = spatial mean of the reduced 256-ch map (B x 256).
    Note the instance norms need more than one voxel per map, so the layer4 map (input / (16, 32,
    32)) must have at least 2 voxels.
    """

    def __init__(
        self,
        in_channels: int = 1,
        blocks: Sequence[int] = (3, 4, 6, 3),
        planes: Sequence[int] = (64, 128, 256, 320),
        bottleneck_channels: int = 256,
    ) -> None:
        super().__init__()
        stem_channels = 64
        self.stem = nn.Sequential(
            WSConv3d(in_channels, stem_channels, 7, stride=(1, 2, 2), padding=3),
            _norm(stem_channels),
            _act(),
        )
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        inplanes = stem_channels
        layers = []
        for i, (n, p) in enumerate(zip(blocks, planes)):
            stride = 1 if i == 0 else 2
            # First block of every layer projects (the official always-true ``stride != 1`` test).
            layer = [Bottleneck3d(inplanes, p, stride=stride, project=True)]
            inplanes = p * Bottleneck3d.expansion
            layer += [Bottleneck3d(inplanes, p) for _ in range(1, n)]
            layers.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.reduce = _conv_norm_act(inplanes, bottleneck_channels, 1)
        self.aspp = ASPP3d(bottleneck_channels, bottleneck_channels)

        self.skip_channels = [stem_channels] + [p * Bottleneck3d.expansion for p in planes[:3]]
        self.bottleneck_channels = bottleneck_channels
        self.pooled_channels = bottleneck_channels
        _init_weights(self)

    def trunk_parameters(self):
        """Parameters of the ResNet trunk (stem + layer1..4), without reduce/ASPP."""
        for mod in (self.stem, self.layer1, self.layer2, self.layer3, self.layer4):
            yield from mod.parameters()

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        stem = self.stem(x)
        l1 = self.layer1(self.maxpool(stem))
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        l4 = self.layer4(l3)
        reduced = self.reduce(l4)
        bottleneck = self.aspp(reduced)
        pooled = reduced.mean(dim=(2, 3, 4))
        return EncoderOutput(skips=[stem, l1, l2, l3], bottleneck=bottleneck, pooled=pooled)


class ResNet3dDecoder(nn.Module):
    """Official ShaSpec decoder (``U_Res3D_dec``) over M modalities' concatenated features.

    ``forward(bottleneck, skips, output_size=None)``: ``bottleneck`` is B x M*256 x d x h x w
    (the M fused maps concatenated on channels); ``skips`` lists, high resolution first as the
    encoder returns them, the M modalities' maps concatenated per scale (B x M*c_k x ...).
    Returns logits B x ``out_channels`` x (stem size x (1, 2, 2)), or ``output_size`` if given.
    """

    def __init__(
        self,
        n_modalities: int,
        out_channels: int,
        skip_channels: Sequence[int] = (64, 256, 512, 1024),
        bottleneck_channels: int = 256,
        decoder_channels: Sequence[int] = (256, 128, 64, 32),
    ) -> None:
        super().__init__()
        if len(skip_channels) != len(decoder_channels):
            raise ValueError("need one decoder width per skip scale")
        self.n_modalities = n_modalities
        self.out_channels = out_channels
        self.skip_channels = list(skip_channels)
        m = n_modalities
        ups, projs, stages = [], [], []
        prev = m * bottleneck_channels
        # Deepest skip first.
        for c_skip, c_dec in zip(reversed(self.skip_channels), decoder_channels):
            ups.append(nn.ConvTranspose3d(prev, c_dec, kernel_size=2, stride=2, bias=False))
            projs.append(_conv_norm_act(m * c_skip, c_dec, 1))
            stages.append(BasicBlock3d(c_dec))
            prev = c_dec
        self.ups = nn.ModuleList(ups)
        self.skip_projs = nn.ModuleList(projs)
        self.stages = nn.ModuleList(stages)
        # Official cls_conv is a plain nn.Conv3d (not weight-standardised), bias-free.
        self.cls_conv = nn.Conv3d(prev, out_channels, kernel_size=1, bias=False)
        _init_weights(self)

    def forward(
        self,
        bottleneck: torch.Tensor,
        skips: Sequence[torch.Tensor],
        output_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        if len(skips) != len(self.ups):
            raise ValueError(f"expected {len(self.ups)} skip maps, got {len(skips)}")
        x = bottleneck
        for up, proj, stage, skip in zip(self.ups, self.skip_projs, self.stages, reversed(list(skips))):
            x = up(x)
            s = proj(skip)
            if x.shape[2:] != s.shape[2:]:
                x = F.interpolate(x, size=s.shape[2:], mode="trilinear", align_corners=False)
            x = stage(x + s)
        logits = self.cls_conv(x)
        if output_size is not None:
            return F.interpolate(logits, size=tuple(output_size), mode="trilinear", align_corners=False)
        return F.interpolate(logits, scale_factor=(1, 2, 2), mode="trilinear", align_corners=False)
