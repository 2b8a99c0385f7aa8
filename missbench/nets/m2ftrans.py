"""M2FTrans's building blocks (Shi et al., IEEE JBHI 2024; github.com/Jun-Jie-Shi/M2FTrans, MIT licence, at
03a0b28ae03ad1a7dea5fb874c7b47c1439caa34: M2FTrans_v1/models/fusiontrans.py, models/blocks.py, models/mask.py,
layers.py). Written after the code, not copied; module and attribute names follow the code's (``e1_c1``,
``trans_bottle``, ``CT5``, ``RFM3``, ``prm_fusion5``, ``query_map``, ``pwconv1`` ...), so that an official state
dict maps onto them by renames (methods/m2ftrans.py, ``M2FTrans.official_state_dict``).

- `PostNormConv`: the code's ``general_conv3d``: Conv3d (bias; reflect padding where the code has it) ->
  InstanceNorm3d (no affine) -> LeakyReLU(0.2), RFNet's unit.
- `Encoder`: one modality's five stages (width, 2, 4, 8, 16 x width channels), RFNet's encoder with one
  more stage.
- `MaskedTransformer`: pre-norm blocks whose self-attention takes a per-sample mask of allowed (query,
  key) pairs (-inf before the softmax) and returns its attention; `fusion_attention_mask` is the code's
  ``mask_gen_fusion``: each modality's tokens attend to their own modality only, the learnable fusion
  tokens to themselves and to every available modality.
- `spatial_weights`: the code's ``Weight_Attention``: the first layer's attention of the fusion tokens
  summed over heads and over fusion tokens, per modality: one weight per bottleneck voxel and modality.
- `MultiCrossToken`: the channel-wise fusion transformer (``MultiMaskCrossBlock`` layers): the fused map's
  channels (queries) attend to the channels of all available modalities' maps (keys, values; one
  depth-wise conv block per modality), attention over channels scaled by voxels^-0.5, then
  ConvNeXt-like group-conv feed-forwards.
- `FusionDecoder`: the code's ``Decoder_fusion``: channel-wise fusion transformers at 1/16 and 1/8 scale,
  ``fusion_postnorm`` over the masked concatenated skips at 1/4, 1/2 and 1, and a probability map
  (``prm_fusion``) from the decoder feature at every scale, for deep supervision.
(The shared separate decoder is RFNet's, `missbench.nets.rfnet.SepDecoder`, with five stages.)

Maps of one voxel (16^3 patches, bottleneck 1^3; the code only sees 80^3, bottleneck 5^3): a
reflect-padded conv falls back to replicate padding and instance norm returns zeros, as
`missbench.nets.mmformer.PadConv3d` / `InstanceNorm3d` do; any larger map is computed as the code does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from missbench.nets.mmformer import FeedForward, InstanceNorm3d, PadConv3d, PreNorm, Residual
from missbench.nets.rfnet import mask_modalities, upsample_to

#: LeakyReLU slope of ``general_conv3d``.
SLOPE = 0.2
#: LayerNorm epsilon of the channel-wise fusion transformer's blocks (blocks.py).
LN_EPS = 1e-6


class PostNormConv(nn.Module):
    """``general_conv3d``: Conv3d -> InstanceNorm3d -> LeakyReLU(0.2)."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1, pad: str = "reflect") -> None:
        super().__init__()
        self.conv = PadConv3d(c_in, c_out, k, stride=stride, padding=k // 2, padding_mode=pad, bias=True)
        self.norm = InstanceNorm3d(c_out)
        self.activation = nn.LeakyReLU(SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(x)))


def stage_channels(width: int, stages: int = 5) -> list[int]:
    return [width * 2**k for k in range(stages)]


class Encoder(nn.Module):
    """One modality's encoder (the code's ``Encoder``): maps at 1, 1/2, 1/4, 1/8, 1/16 scale."""

    def __init__(self, width: int = 16, stages: int = 5) -> None:
        super().__init__()
        self.channels = chans = stage_channels(width, stages)
        self.stages = stages
        for k in range(1, stages + 1):
            c = chans[k - 1]
            setattr(self, f"e{k}_c1", PostNormConv(1 if k == 1 else chans[k - 2], c, stride=1 if k == 1 else 2))
            setattr(self, f"e{k}_c2", PostNormConv(c, c))
            setattr(self, f"e{k}_c3", PostNormConv(c, c))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for k in range(1, self.stages + 1):
            x = getattr(self, f"e{k}_c1")(x)
            x = x + getattr(self, f"e{k}_c3")(getattr(self, f"e{k}_c2")(x))
            maps.append(x)
        return maps


# --- the masked fusion transformer at the bottleneck ---


def fusion_attention_mask(available: torch.Tensor, tokens: int) -> torch.Tensor:
    """B x T x T allowed (query, key) pairs for M modality blocks of ``tokens`` tokens then one block of fusion
    tokens (T = (M + 1) * tokens): a modality's tokens see their own block; the fusion tokens see themselves
    and every available modality's block (the code's ``mask_gen_fusion``)."""
    b, m = available.shape
    block = torch.arange(m + 1, device=available.device).repeat_interleave(tokens)  # T
    same = block[:, None] == block[None, :]
    key_ok = torch.cat([available, torch.ones(b, 1, dtype=torch.bool, device=available.device)], 1)[:, block]  # B x T
    fusion_row = (block == m)[None, :, None]
    return same[None] | (fusion_row & key_ok[:, None, :])


class MaskedAttention(nn.Module):
    """Multi-head self-attention (no qkv bias) under a B x T x T mask; returns (output, attention after dropout)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = self.attn_drop(attn.masked_fill(~allowed[:, None], float("-inf")).softmax(-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))), attn


class MaskedPreNormDrop(nn.Module):
    """LayerNorm -> masked attention -> dropout (the code's ``MaskedPreNormDrop``)."""

    def __init__(self, dim: int, dropout: float, fn: MaskedAttention) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.fn = fn

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, attn = self.fn(self.norm(x), allowed)
        return self.dropout(y), attn


class MaskedResidual(nn.Module):
    def __init__(self, fn: MaskedPreNormDrop) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, attn = self.fn(x, allowed)
        return y + x, attn


class MaskedTransformer(nn.Module):
    """``depth`` blocks: x + attention(LN x) under the mask, then x + MLP(LN x) (GELU). Returns the tokens and each
    block's attention (B x heads x T x T, detached, as the code's ``attn_list``)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.cross_attention_list = nn.ModuleList(
            MaskedResidual(MaskedPreNormDrop(dim, dropout, MaskedAttention(dim, heads, dropout))) for _ in range(depth))
        self.cross_ffn_list = nn.ModuleList(Residual(PreNorm(dim, FeedForward(dim, mlp_dim, dropout))) for _ in range(depth))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        attns = []
        for attn_block, ffn in zip(self.cross_attention_list, self.cross_ffn_list):
            x, attn = attn_block(x, allowed)
            attns.append(attn.detach())
            x = ffn(x)
        return x, attns


def spatial_weights(attn: torch.Tensor, n_modalities: int, grid: Sequence[int]) -> list[torch.Tensor]:
    """Per modality, B x 1 x grid weights: the attention of the fusion tokens (the last block of rows) to that
    modality's tokens, summed over heads and over the fusion tokens (the code's ``Weight_Attention``)."""
    b, n = attn.shape[0], attn.shape[-1] // (n_modalities + 1)
    fused = attn[:, :, n_modalities * n :, :].sum(1).sum(-2)  # B x T: summed over heads and query tokens
    return [fused[:, m * n : (m + 1) * n].reshape(b, 1, *grid) for m in range(n_modalities)]


def nearest_to(w: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``w`` resized by nearest neighbour to ``ref``'s spatial size (the code's repeated x2 nn.Upsample(nearest))."""
    return w if w.shape[2:] == ref.shape[2:] else F.interpolate(w, size=ref.shape[2:], mode="nearest")


# --- the channel-wise fusion transformer of the decoder (blocks.py) ---


def channel_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of every voxel (the code's ``nchwd2nlc2nchwd``)."""
    return norm(x.movedim(1, -1)).movedim(-1, 1)


class DepthWiseConvBlock(nn.Module):
    """1x1 conv, LN, GELU, depth-wise 3x3x3 conv, LN, GELU, 1x1 conv to ``c_out``, LN."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_in, 1)
        self.norm1 = nn.LayerNorm(c_in, eps=LN_EPS)
        self.act1 = nn.GELU()
        self.conv2 = nn.Conv3d(c_in, c_in, 3, 1, 1, groups=c_in)
        self.norm2 = nn.LayerNorm(c_in, eps=LN_EPS)
        self.act2 = nn.GELU()
        self.conv3 = nn.Conv3d(c_in, c_out, 1)
        self.norm3 = nn.LayerNorm(c_out, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(channel_norm(self.norm1, self.conv1(x)))
        x = self.act2(channel_norm(self.norm2, self.conv2(x)))
        return channel_norm(self.norm3, self.conv3(x))


class GroupConvBlock(nn.Module):
    """The feed-forward: 1x1 conv to ``expand`` x C, LN, GELU, grouped 3x3x3 conv (C groups), LN, GELU, 1x1 conv
    back, LN, added to the identity, GELU."""

    def __init__(self, channels: int, expand: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        wide = channels * expand
        self.pwconv1 = nn.Conv3d(channels, wide, 1)
        self.norm1 = nn.LayerNorm(wide, eps=LN_EPS)
        self.act1 = nn.GELU()
        self.dwconv = nn.Conv3d(wide, wide, 3, 1, 1, groups=channels)
        self.norm2 = nn.LayerNorm(wide, eps=LN_EPS)
        self.act2 = nn.GELU()
        self.pwconv2 = nn.Conv3d(wide, channels, 1)
        self.norm3 = nn.LayerNorm(channels, eps=LN_EPS)
        self.final_act = nn.GELU()
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(channel_norm(self.norm1, self.pwconv1(x)))
        y = self.act2(channel_norm(self.norm2, self.dwconv(y)))
        y = channel_norm(self.norm3, self.pwconv2(y))
        return self.final_act(x + self.proj_drop(y))


class MultiMaskAttentionLayer(nn.Module):
    """Channel attention of the fused map (queries) over the channels of every modality's map (keys and values,
    one depth-wise block per modality; a missing modality's channels masked out), added back to the queries."""

    def __init__(self, kv_dim: int, query_dim: int, n_modalities: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.attn_drop = nn.Dropout(attn_drop)
        self.query_map = DepthWiseConvBlock(query_dim, query_dim)
        self.key_maps = nn.ModuleList(DepthWiseConvBlock(kv_dim, kv_dim) for _ in range(n_modalities))
        self.value_maps = nn.ModuleList(DepthWiseConvBlock(kv_dim, kv_dim) for _ in range(n_modalities))
        self.out_project = DepthWiseConvBlock(query_dim, query_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, query: torch.Tensor, maps: Sequence[torch.Tensor], available: torch.Tensor) -> torch.Tensor:
        b, c = query.shape[:2]
        q = self.query_map(query).flatten(2)  # B x C x L
        k = torch.cat([f(x).flatten(2) for f, x in zip(self.key_maps, maps)], 1)  # B x M*C' x L
        v = torch.cat([f(x).flatten(2) for f, x in zip(self.value_maps, maps)], 1)
        attn = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # B x C x M*C'
        keep = available.to(attn.device).repeat_interleave(k.shape[1] // available.shape[1], 1)[:, None, :]
        attn = self.attn_drop(attn.masked_fill(~keep, float("-inf")).softmax(-1))
        x = self.out_project((attn @ v).reshape(query.shape))
        return query + self.proj_drop(x)


class MultiMaskCrossBlock(nn.Module):
    """One layer: channel cross-attention, the queries' feed-forward (``ffn1``) and, but in the last layer, one
    feed-forward shared by the modalities' maps (``ffn2``)."""

    def __init__(self, channels: int, n_modalities: int, expand: int, drop_rate: float, attn_drop: float,
                 ffn_feature_maps: bool) -> None:
        super().__init__()
        self.ffn_feature_maps = ffn_feature_maps
        self.cross_attn = MultiMaskAttentionLayer(channels, channels, n_modalities, attn_drop, drop_rate)
        if ffn_feature_maps:
            self.ffn2 = GroupConvBlock(channels, expand)
        self.ffn1 = GroupConvBlock(channels, expand)

    def forward(self, kernels: torch.Tensor, maps: list[torch.Tensor], available: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        kernels = self.ffn1(self.cross_attn(kernels, maps, available))
        if self.ffn_feature_maps:
            maps = [self.ffn2(x) for x in maps]
        return kernels, maps


class MultiCrossToken(nn.Module):
    """``layers`` cross blocks; returns the fused map (the code's ``MultiCrossToken``)."""

    def __init__(self, channels: int, n_modalities: int, layers: int = 2, expand: int = 4, drop_rate: float = 0.1,
                 attn_drop: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MultiMaskCrossBlock(channels, n_modalities, expand, drop_rate, attn_drop, i != layers - 1)
                                    for i in range(layers))

    def forward(self, maps: list[torch.Tensor], kernels: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            kernels, maps = layer(kernels, maps, available)
        return kernels


# --- the fusion decoder ---


class PrmFusion(nn.Module):
    """``prm_fusion``: a 1x1 unit to 16 channels, a 1x1 conv to the classes, softmax (probabilities)."""

    def __init__(self, channels: int, n_classes: int) -> None:
        super().__init__()
        self.prm_layer = nn.Sequential(PostNormConv(channels, 16, k=1), nn.Conv3d(16, n_classes, 1), nn.Softmax(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prm_layer(x)


class FusionPostNorm(nn.Module):
    """``fusion_postnorm``: the masked skips of the M modalities, concatenated in order, through 1x1 (M*C -> C),
    3x3x3 and 1x1 units."""

    def __init__(self, channels: int, n_modalities: int) -> None:
        super().__init__()
        self.fusion_layer = nn.Sequential(PostNormConv(channels * n_modalities, channels, k=1),
                                          PostNormConv(channels, channels), PostNormConv(channels, channels, k=1))

    def forward(self, x: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """``x``: B x M x C x ...."""
        return self.fusion_layer(mask_modalities(x, available).flatten(1, 2))


class FusionDecoder(nn.Module):
    """The code's ``Decoder_fusion``; ``forward`` returns (logits, region probabilities at full resolution, finest
    first: the code's ``prm_pred1``, ``up2(prm_pred2)`` ... ``up16(prm_pred5)``)."""

    def __init__(self, width: int, n_classes: int, n_modalities: int, cross_layers: int = 2, expand: int = 4,
                 drop_rate: float = 0.1) -> None:
        super().__init__()
        c = stage_channels(width)
        self.d5_c2 = PostNormConv(2 * c[4], c[4])
        self.d5_out = PostNormConv(c[4], c[4], k=1)
        self.CT5 = MultiCrossToken(c[4], n_modalities, cross_layers, expand, drop_rate)
        self.CT4 = MultiCrossToken(c[3], n_modalities, cross_layers, expand, drop_rate)
        for k in (4, 3, 2, 1):
            setattr(self, f"d{k}_c1", PostNormConv(c[k], c[k - 1]))
            setattr(self, f"d{k}_c2", PostNormConv(2 * c[k - 1], c[k - 1]))
            setattr(self, f"d{k}_out", PostNormConv(c[k - 1], c[k - 1], k=1))
        self.seg_layer = nn.Conv3d(width, n_classes, 1)
        for k in (3, 2, 1):
            setattr(self, f"RFM{k}", FusionPostNorm(c[k - 1], n_modalities))
        for k in (5, 4, 3, 2, 1):
            setattr(self, f"prm_fusion{k}", PrmFusion(c[k - 1], n_classes))

    def forward(self, skips: list[list[torch.Tensor]], tokens5: list[torch.Tensor], fused: torch.Tensor,
                available: torch.Tensor, prms: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``skips[k]``: per modality the weighted map at scale 2^-k (k = 0..3); ``tokens5``: per modality the
        weighted transformer map at 1/16; ``fused``: the fusion tokens' map."""
        out = [self.prm_fusion5(fused)] if prms else []
        d = self.d5_out(self.d5_c2(torch.cat([self.CT5(tokens5, fused, available), fused], 1)))
        d = self.d4_c1(upsample_to(d, skips[3][0]))
        if prms:
            out.append(self.prm_fusion4(d))
        d = self.d4_out(self.d4_c2(torch.cat([self.CT4(skips[3], d, available), d], 1)))
        for k in (3, 2, 1):
            d = getattr(self, f"d{k}_c1")(upsample_to(d, skips[k - 1][0]))
            if prms:
                out.append(getattr(self, f"prm_fusion{k}")(d))
            f = getattr(self, f"RFM{k}")(torch.stack(skips[k - 1], 1), available)
            d = getattr(self, f"d{k}_out")(getattr(self, f"d{k}_c2")(torch.cat([f, d], 1)))
        return self.seg_layer(d), out[::-1]
