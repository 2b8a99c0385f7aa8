"""mmFormer's building blocks (Zhang et al., MICCAI 2022; github.com/YaoZhang93/mmFormer, Apache-2.0).

Written after the official ``mmformer.py``, ``layers.py`` and ``utils/criterions.py``; module and
attribute names follow the code's (``e1_c1`` .. ``e5_c3``, ``d4_c1``, ``RFM5``, ``seg_d4``,
``cross_attention_list`` ...), so an official state dict maps onto them by a prefix rename
(``methods/mmformer.py``, ``MMFormer.official_state_dict``).

- ``PreNormConv``: the code's ``general_conv3d_prenorm``: InstanceNorm3d (no affine) -> LeakyReLU(0.2)
  -> Conv3d with bias. Reflect padding where the code has it.
- ``HybridConvEncoder``: one modality's conv stages, 8, 16, 32, 64, 128 channels, a stride-2 conv
  between stages, each stage ``x + c3(c2(x))``.
- ``Transformer``: pre-norm blocks (LayerNorm, 8-head self-attention without qkv bias, dropout 0.1;
  LayerNorm, MLP with GELU), the positional embedding added before every block.
- ``DecoderSep``: the auxiliary decoder, one module shared by all modalities; ``DecoderFuse``: the
  fused decoder with ``fusion_prenorm`` (1x1, 3x3, 1x1 conv) over the M concatenated skips at every
  scale and deep-supervision heads at 1/2, 1/4, 1/8 and 1/16 scale.
(The masking and the criterions are RFNet's, whose code base mmFormer's is: missbench/nets/rfnet.py.)

Deviations, only on maps of one voxel (16^3 patches, bottleneck 1^3; the code only ever sees 128^3,
bottleneck 8^3): a reflect-padded conv falls back to replicate padding for that call (reflecting a
one-voxel-wide map is undefined), and instance norm returns zeros, the limit of (x - mean) / sqrt(var + eps)
where torch refuses a single voxel. Any larger map is computed exactly as the code does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2  # general_conv3d_prenorm's relufactor


class PadConv3d(nn.Conv3d):
    """Conv3d whose reflect padding falls back to replicate where a spatial size is not above the padding."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode == "zeros":
            return super()._conv_forward(input, weight, bias)
        mode = self.padding_mode
        if mode == "reflect" and any(s <= p for s, p in zip(input.shape[-3:], self.padding)):
            mode = "replicate"
        padded = F.pad(input, self._reversed_padding_repeated_twice, mode=mode)
        return F.conv3d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)


class InstanceNorm3d(nn.InstanceNorm3d):
    """InstanceNorm3d (no affine) that also takes one-voxel maps, where it returns the formula's limit, zeros."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2:].numel() == 1:
            return torch.zeros_like(x)
        return super().forward(x)


class PreNormConv(nn.Module):
    """``general_conv3d_prenorm``: InstanceNorm3d -> LeakyReLU(0.2) -> Conv3d (bias)."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1, pad: str = "zeros") -> None:
        super().__init__()
        self.conv = PadConv3d(c_in, c_out, k, stride=stride, padding=k // 2, padding_mode=pad, bias=True)
        # The code builds the norm with out_ch but applies it to the input; without affine parameters the
        # count is unused, and in_ch spares torch's channel-mismatch warning.
        self.norm = InstanceNorm3d(c_in)
        self.activation = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.activation(self.norm(x)))


class HybridConvEncoder(nn.Module):
    """The convolutional half of a modality-specific encoder (the code's ``Encoder``): five maps, 1 to 1/16 scale."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        w = width
        self.channels = [w, 2 * w, 4 * w, 8 * w, 16 * w]
        self.e1_c1 = PadConv3d(1, w, 3, padding=1, padding_mode="reflect", bias=True)
        for k in range(1, 6):
            c_in, c = self.channels[max(k - 2, 0)], self.channels[k - 1]
            if k > 1:
                setattr(self, f"e{k}_c1", PreNormConv(c_in, c, stride=2, pad="reflect"))
            setattr(self, f"e{k}_c2", PreNormConv(c, c, pad="reflect"))
            setattr(self, f"e{k}_c3", PreNormConv(c, c, pad="reflect"))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for k in range(1, 6):
            x = getattr(self, f"e{k}_c1")(x)
            x = x + getattr(self, f"e{k}_c3")(getattr(self, f"e{k}_c2")(x))
            maps.append(x)
        return maps


# --- Transformer (the code's SelfAttention / Residual / PreNorm / PreNormDrop / FeedForward) ---


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, n, c)))


class Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module, dropout: float | None = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        if dropout is not None:  # PreNormDrop
            self.dropout = nn.Dropout(dropout)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fn(self.norm(x))
        return self.dropout(y) if hasattr(self, "dropout") else y


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Transformer(nn.Module):
    """``depth`` pre-norm blocks; ``pos`` is added to the tokens before every block (the code's ``Transformer``)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.cross_attention_list = nn.ModuleList(
            Residual(PreNorm(dim, SelfAttention(dim, heads, dropout), dropout=dropout)) for _ in range(depth)
        )
        self.cross_ffn_list = nn.ModuleList(Residual(PreNorm(dim, FeedForward(dim, mlp_dim, dropout))) for _ in range(depth))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for attn, ffn in zip(self.cross_attention_list, self.cross_ffn_list):
            x = ffn(attn(x + pos))
        return x


def resize_positions(pos: torch.Tensor, grid: Sequence[int], to: Sequence[int]) -> torch.Tensor:
    """A 1 x prod(grid) x D positional table (tokens in D, H, W raster order) resampled to grid ``to``.

    Identity when the grids agree (the official 128^3 input: 8^3 tokens); otherwise trilinear
    interpolation (align_corners=False) of the table seen as a D-channel volume, as ViTs resize
    their position embeddings for another input size. Gradients reach the stored table.
    """
    grid, to = tuple(grid), tuple(to)
    if grid == to:
        return pos
    d = pos.shape[-1]
    vol = pos.reshape(1, *grid, d).permute(0, 4, 1, 2, 3)
    return F.interpolate(vol, size=to, mode="trilinear", align_corners=False).permute(0, 2, 3, 4, 1).reshape(1, -1, d)


def tokens_from_map(x: torch.Tensor) -> torch.Tensor:
    """B x C x D x H x W -> B x (D*H*W) x C, raster order (the code's permute(0, 2, 3, 4, 1).view)."""
    return x.permute(0, 2, 3, 4, 1).reshape(x.shape[0], -1, x.shape[1])


def map_from_tokens(t: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """B x N x C tokens -> B x C x grid (the inverse of ``tokens_from_map``)."""
    return t.reshape(t.shape[0], *grid, t.shape[-1]).permute(0, 4, 1, 2, 3)


# --- decoders ---


class FusionPreNorm(nn.Module):
    """``fusion_prenorm``: 1x1 (n_in*C -> C), 3x3, 1x1 pre-norm convs, zero padding."""

    def __init__(self, channels: int, n_inputs: int) -> None:
        super().__init__()
        self.fusion_layer = nn.Sequential(
            PreNormConv(channels * n_inputs, channels, k=1),
            PreNormConv(channels, channels, k=3),
            PreNormConv(channels, channels, k=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fusion_layer(x)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=True)


class _DecoderStages(nn.Module):
    """The d4..d1 stages shared in layout by both decoders: ``dK_c1`` after upsampling, ``dK_c2`` on the concat, ``dK_out`` 1x1."""

    def __init__(self, width: int, n_classes: int) -> None:
        super().__init__()
        for k, c in zip((4, 3, 2, 1), (8 * width, 4 * width, 2 * width, width)):
            setattr(self, f"d{k}_c1", PreNormConv(2 * c, c, pad="reflect"))
            setattr(self, f"d{k}_c2", PreNormConv(2 * c, c, pad="reflect"))
            setattr(self, f"d{k}_out", PreNormConv(c, c, k=1, pad="reflect"))
        self.seg_layer = nn.Conv3d(width, n_classes, 1, bias=True)


class DecoderSep(_DecoderStages):
    """The auxiliary decoder (the code's ``Decoder_sep``) on one modality's conv maps; returns logits."""

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        x1, x2, x3, x4, x5 = maps
        de = self.d4_c1(_up2(x5))
        for k, skip in zip((4, 3, 2, 1), (x4, x3, x2, x1)):
            de = getattr(self, f"d{k}_out")(getattr(self, f"d{k}_c2")(torch.cat((de, skip), 1)))
            if k > 1:
                de = getattr(self, f"d{k - 1}_c1")(_up2(de))
        return self.seg_layer(de)


class DecoderFuse(_DecoderStages):
    """The fused decoder (the code's ``Decoder_fuse``) on the masked, concatenated maps of all modalities.

    Returns the full-resolution logits and, with ``deep=True``, the deep-supervision logits at 1/16,
    1/8, 1/4 and 1/2 scale (the code's ``seg_d4`` .. ``seg_d1``) in that order.
    """

    def __init__(self, width: int, n_classes: int, n_inputs: int) -> None:
        super().__init__(width, n_classes)
        for k, c in zip((5, 4, 3, 2, 1), (16 * width, 8 * width, 4 * width, 2 * width, width)):
            setattr(self, f"RFM{k}", FusionPreNorm(c, n_inputs))
        for k, c in zip((4, 3, 2, 1), (16 * width, 8 * width, 4 * width, 2 * width)):
            setattr(self, f"seg_d{k}", nn.Conv3d(c, n_classes, 1, bias=True))

    def forward(self, maps: Sequence[torch.Tensor], deep: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x1, x2, x3, x4, x5 = maps
        de = self.RFM5(x5)
        side = [self.seg_d4(de)] if deep else []
        de = self.d4_c1(_up2(de))
        for k, skip in zip((4, 3, 2, 1), (x4, x3, x2, x1)):
            de = torch.cat((getattr(self, f"RFM{k}")(skip), de), 1)
            de = getattr(self, f"d{k}_out")(getattr(self, f"d{k}_c2")(de))
            if k > 1:
                if deep:
                    side.append(getattr(self, f"seg_d{k - 1}")(de))
                de = getattr(self, f"d{k - 1}_c1")(_up2(de))
        return self.seg_layer(de), side
