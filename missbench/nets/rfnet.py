"""RFNet's building blocks (Ding, Yu, Yang, ICCV 2021; code github.com/dyh127/RFNet, models.py and layers.py).

Written from the official code's layout, not copied from it. The pieces are generic in width,
number of stages and modalities so that methods built on RFNet's code base can reuse them:

- `ConvUnit`: Conv3d (bias, reflect padding) -> InstanceNorm3d (no affine) -> LeakyReLU(0.2), the
  code's ``general_conv3d``; ``prenorm=True`` gives IN -> LeakyReLU -> Conv3d, mmFormer's
  ``general_conv3d_prenorm``.
- `RFNetEncoder`: one modality's pyramid. Stage k: a unit (stride 2 for k > 0), then two units
  added back (x + u2(u1(x))). Channels width * 2^k. ``plain_stem`` makes the first conv a bare
  Conv3d (mmFormer's encoder: width 8, 5 stages, prenorm units, plain stem).
- `SepDecoder`: the code's ``Decoder_sep``, shared across modalities (up, 3x3x3 unit, concat skip,
  3x3x3 unit, 1x1x1 unit per level; 1x1x1 conv head). Returns logits.
- `mask_modalities`: zero the features of missing modalities (B x M x C x ...), the code's
  ``y[mask] = x[mask]`` (mmFormer's ``MaskModal``).
- `PRMGenerator`, `RegionAwareFusion`, `FusionDecoder`: the Region-aware Fusion Module and the
  fusion decoder that applies it at every scale.
- `softmax_weighted_ce`, `batch_dice_loss`: the code's ``criterions.softmax_weighted_loss`` and
  ``criterions.dice_loss`` (mmFormer uses the same two).
- `init_kaiming`: Kaiming-normal weights of every Conv3d (the code's ``Model.__init__``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: LeakyReLU slope of every unit.
SLOPE = 0.2


class ConvUnit(nn.Module):
    """Conv3d -> InstanceNorm3d -> LeakyReLU(0.2), or IN -> LeakyReLU -> Conv3d with ``prenorm``."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, prenorm: bool = False,
                 pad_mode: str = "reflect") -> None:
        super().__init__()
        self.prenorm = prenorm
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, padding_mode=pad_mode, bias=True)
        self.norm = nn.InstanceNorm3d(c_in if prenorm else c_out)
        self.act = nn.LeakyReLU(SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.prenorm:
            return self.conv(self.act(self.norm(x)))
        return self.act(self.norm(self.conv(x)))


def stage_channels(width: int, stages: int) -> list[int]:
    """Channels per level, highest resolution first: width * 2^k."""
    return [width * 2**k for k in range(stages)]


class RFNetEncoder(nn.Module):
    """One modality's encoder; returns the ``stages`` feature maps, highest resolution first."""

    def __init__(self, in_channels: int = 1, width: int = 16, stages: int = 4, prenorm: bool = False,
                 plain_stem: bool = False) -> None:
        super().__init__()
        chans = stage_channels(width, stages)
        self.channels = chans
        self.down = nn.ModuleList()
        self.body = nn.ModuleList()
        for k, c in enumerate(chans):
            if k == 0 and plain_stem:
                first: nn.Module = nn.Conv3d(in_channels, c, 3, padding=1, padding_mode="reflect", bias=True)
            else:
                first = ConvUnit(in_channels if k == 0 else chans[k - 1], c, stride=1 if k == 0 else 2, prenorm=prenorm)
            self.down.append(first)
            self.body.append(nn.Sequential(ConvUnit(c, c, prenorm=prenorm), ConvUnit(c, c, prenorm=prenorm)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for down, body in zip(self.down, self.body):
            x = down(x)
            x = x + body(x)
            maps.append(x)
        return maps


def upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Trilinear (align_corners=True, as the code's nn.Upsample) to ``ref``'s spatial size (x2 for sizes divisible by 2)."""
    return F.interpolate(x, size=ref.shape[2:], mode="trilinear", align_corners=True)


class _LevelBlocks(nn.Module):
    """Per decoder level k < top: up-conv C_{k+1} -> C_k (3x3x3), merge 2C_k -> C_k (3x3x3), out C_k -> C_k (1x1x1)."""

    def __init__(self, chans: list[int], prenorm: bool) -> None:
        super().__init__()
        self.up_conv = nn.ModuleList(ConvUnit(chans[k + 1], chans[k], prenorm=prenorm) for k in range(len(chans) - 1))
        self.merge = nn.ModuleList(ConvUnit(2 * chans[k], chans[k], prenorm=prenorm) for k in range(len(chans) - 1))
        self.out = nn.ModuleList(ConvUnit(chans[k], chans[k], kernel=1, prenorm=prenorm) for k in range(len(chans) - 1))


class SepDecoder(_LevelBlocks):
    """The shared per-modality decoder (``Decoder_sep``): U-Net over one modality's pyramid, logits out."""

    def __init__(self, width: int, stages: int, num_cls: int, prenorm: bool = False) -> None:
        chans = stage_channels(width, stages)
        super().__init__(chans, prenorm)
        self.head = nn.Conv3d(chans[0], num_cls, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        d = maps[-1]
        for k in reversed(range(len(maps) - 1)):
            d = self.up_conv[k](upsample_to(d, maps[k]))
            d = self.out[k](self.merge[k](torch.cat([d, maps[k]], 1)))
        return self.head(d)


def mask_modalities(x: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """B x M x C x ... features with every missing modality's (``available`` B x M False) set to zero."""
    keep = available.to(x.device).view(*available.shape, *[1] * (x.ndim - 2))
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))


def _embedding(c_in: int, c: int) -> nn.Sequential:
    """1x1x1 -> 3x3x3 -> 1x1x1 units through a C/4 bottleneck (the code's PRM ``embedding_layer``)."""
    return nn.Sequential(ConvUnit(c_in, max(c // 4, 1), kernel=1), ConvUnit(max(c // 4, 1), max(c // 4, 1)),
                         ConvUnit(max(c // 4, 1), c, kernel=1))


class PRMGenerator(nn.Module):
    """Probabilistic region map: softmax over ``num_cls`` regions from the masked, concatenated features.

    At the deepest scale from the embedding alone; elsewhere from [decoder feature; embedding]
    (the code's ``prm_generator_laststage`` / ``prm_generator``). Returns probabilities.
    """

    def __init__(self, channels: int, n_modalities: int, num_cls: int, with_decoder: bool, hidden: int = 16) -> None:
        super().__init__()
        self.with_decoder = with_decoder
        self.embedding = _embedding(n_modalities * channels, channels)
        self.head = nn.Sequential(ConvUnit(channels * (2 if with_decoder else 1), hidden, kernel=1), nn.Conv3d(hidden, num_cls, 1))

    def forward(self, masked: torch.Tensor, decoder: torch.Tensor | None = None) -> torch.Tensor:
        e = self.embedding(masked.flatten(1, 2))
        if self.with_decoder:
            assert decoder is not None
            e = torch.cat([decoder, e], 1)
        return torch.softmax(self.head(e), 1)


class RegionAwareFusion(nn.Module):
    """The RFM (``region_aware_modal_fusion``): region-wise modality weighting, region fusion, short-cut.

    For each region r with map p_r: every masked modality feature y_k is restricted to the region
    (y_k * p_r), pooled over space and divided by the region's mean probability; a 1x1x1 MLP
    [M*C + 1 -> 128 -> M] with a sigmoid on [pooled features; mean probability] gives one weight
    per modality; the region feature is sum_k w_rk * y_k * p_r. The R region features are
    concatenated and reduced (1x1x1 -> 3x3x3 -> 1x1x1 units, to C/2), and concatenated with the
    short-cut (the same three units over the masked concatenation, to C/2): C channels out.
    """

    def __init__(self, channels: int, n_modalities: int, num_cls: int, hidden: int = 128) -> None:
        super().__init__()
        c, m = channels, n_modalities
        self.weight_mlps = nn.ModuleList(
            nn.Sequential(nn.Conv3d(m * c + 1, hidden, 1), nn.LeakyReLU(SLOPE, inplace=True), nn.Conv3d(hidden, m, 1))
            for _ in range(num_cls)
        )
        self.region_fusion = nn.Sequential(ConvUnit(num_cls * c, c, kernel=1), ConvUnit(c, c), ConvUnit(c, c // 2, kernel=1))
        self.short_cut = nn.Sequential(ConvUnit(m * c, c, kernel=1), ConvUnit(c, c), ConvUnit(c, c // 2, kernel=1))

    def modality_weights(self, masked: torch.Tensor, prm: torch.Tensor) -> torch.Tensor:
        """B x R x M sigmoid weights of each modality in each region."""
        b, m, c = masked.shape[:3]
        n = masked[0, 0, 0].numel()
        prm_avg = prm.flatten(2).mean(-1) + 1e-7  # B x R
        pooled = torch.einsum("bmcs,brs->brmc", masked.flatten(3), prm.flatten(2)) / n  # mean over space of y_k * p_r
        pooled = pooled / prm_avg[:, :, None, None]
        out = []
        for r, mlp in enumerate(self.weight_mlps):
            inp = torch.cat([pooled[:, r].reshape(b, m * c), prm_avg[:, r : r + 1]], 1)
            out.append(torch.sigmoid(mlp(inp[:, :, None, None, None]).view(b, m)))
        return torch.stack(out, 1)

    def forward(self, masked: torch.Tensor, prm: torch.Tensor) -> torch.Tensor:
        """``masked``: B x M x C x ... (missing modalities zeroed); ``prm``: B x R x ... (detached by the caller)."""
        w = self.modality_weights(masked, prm)  # B x R x M
        w = w.view(*w.shape, 1, *[1] * (masked.ndim - 3))  # B x R x M x 1 x ...
        regions = [prm[:, r : r + 1] * (masked * w[:, r]).sum(1) for r in range(w.shape[1])]
        return torch.cat([self.region_fusion(torch.cat(regions, 1)), self.short_cut(masked.flatten(1, 2))], 1)


def region_fusion_modules(chans: list[int], n_modalities: int, num_cls: int) -> tuple[nn.ModuleList, nn.ModuleList]:
    """One region-map generator (PRM; the deepest has no decoder input) and one RFM per scale."""
    top = len(chans) - 1
    return (nn.ModuleList(PRMGenerator(c, n_modalities, num_cls, with_decoder=k < top) for k, c in enumerate(chans)),
            nn.ModuleList(RegionAwareFusion(c, n_modalities, num_cls) for c in chans))


def fuse_deepest(prms: nn.ModuleList, rfms: nn.ModuleList, levels: list[torch.Tensor],
                 available: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
    """Where every RFNet-style decoder starts: the masked levels, the fused deepest feature and its
    region map (the list of maps the decoder extends scale by scale)."""
    masked = [mask_modalities(x, available) for x in levels]
    prm = prms[-1](masked[-1])
    return masked, rfms[-1](masked[-1], prm.detach()), [prm]


class FusionDecoder(_LevelBlocks):
    """The code's ``Decoder_fuse``: an RFM at every scale, each fed by its own region map.

    Deepest scale: PRM from the masked features, RFM, up-conv. Every other scale k: PRM from the
    decoder feature and the masked features, RFM, [RFM output; decoder feature] -> 3x3x3 -> 1x1x1,
    then up-conv. The region maps are detached where the RFM uses them; they are returned (one per
    scale, highest resolution first, at their own resolution) for deep supervision.
    """

    def __init__(self, width: int, stages: int, num_cls: int, n_modalities: int) -> None:
        chans = stage_channels(width, stages)
        super().__init__(chans, prenorm=False)
        self.prms, self.rfms = region_fusion_modules(chans, n_modalities, num_cls)
        self.head = nn.Conv3d(chans[0], num_cls, 1)

    def forward(self, levels: list[torch.Tensor], available: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``levels``: per scale B x M x C x ..., highest resolution first. Returns (logits, region maps)."""
        masked, d, prms = fuse_deepest(self.prms, self.rfms, levels, available)
        for k in reversed(range(len(levels) - 1)):
            d = self.up_conv[k](upsample_to(d, masked[k][:, 0]))
            prm = self.prms[k](masked[k], d)
            prms.append(prm)
            f = self.rfms[k](masked[k], prm.detach())
            d = self.out[k](self.merge[k](torch.cat([f, d], 1)))
        return self.head(d), prms[::-1]


def softmax_weighted_ce(probs: torch.Tensor, onehot: torch.Tensor, floor: float = 0.005) -> torch.Tensor:
    """RFNet's weighted CE on probabilities (``softmax_weighted_loss``).

    Per sample b and class c the weight is 1 - (voxels of c in b) / (voxels in b); the loss is
    mean over batch and voxels of -sum_c w_bc t_c log(clamp(p_c, 0.005, 1)).
    """
    dims = tuple(range(2, probs.ndim))
    weight = 1 - onehot.sum(dims) / onehot.sum((1, *dims))[:, None]  # B x C
    logp = torch.log(probs.clamp(floor, 1))
    per_voxel = -(weight.view(*weight.shape, *[1] * len(dims)) * onehot * logp).sum(1)
    return per_voxel.mean()


def batch_dice_loss(probs: torch.Tensor, onehot: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """RFNet's ``dice_loss``: 1 - mean over classes (background included) of 2 sum(pt) / (sum p + sum t + eps), sums over the batch."""
    dims = (0, *range(2, probs.ndim))
    inter = (probs * onehot).sum(dims)
    return 1 - (2 * inter / (probs.sum(dims) + onehot.sum(dims) + eps)).mean()


def init_kaiming(module: nn.Module) -> None:
    """Kaiming-normal weights (fan_in, default gain) on every Conv3d, as the code's Model.__init__."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight)
