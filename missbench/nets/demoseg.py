"""DeMoSeg's building blocks (Yang et al., IEEE BIBM 2024, arXiv 2408.08708; github.com/kk42yy/DeMoSeg,
Apache-2.0, at 73cd4bbdcb3ec0c6fd352eb3c1811d5d2277503f: DeMoSeg/training/network/DeMoSeg.py, ConvBlock.py,
CSA_CSABlock.py). Written after the code, not copied; module and attribute names follow the code's
(``conv_blocks_context``, ``tu``, ``conv_blocks_localization``, ``seg_outputs``, ``inconv``, ``ch_order``,
``instnorm`` ...), so that a released checkpoint loads by renaming the four modality stems only.

- `ConvNormAct`: nnU-Net's ``ConvDropoutNormNonlin``: 3x3x3 conv (bias) -> instance norm (affine, eps 1e-5)
  -> LeakyReLU(0.01).
- `CSA` and `CSABlock`: the code's channel-wise sparse self-attention (CSSA) and ``CSADropoutNormNonlin``:
  a 3x3x3 conv, instance norm, LeakyReLU, then the map plus itself with its channels permuted per sample
  in the order of a squeeze-excitation score (global average pool, Linear C -> C/4, LeakyReLU, Linear, sigmoid;
  ascending or descending). The permutation comes from an argsort, so the score MLP receives no gradient
  (it is trained by nothing, in the code as here); then instance norm (affine) and LeakyReLU.
- `DecoupledStem` (feature decoupling, FD): per modality a conv unit and a CSA block to ``width`` channels,
  read as four quarters: quarter 0 expresses the modality itself, quarters 1-3 stand in for the other
  three (`QUARTERS`, the code's ``missing_klloss`` comment: "t1: t1, ce, t2, fl" ...).
- `rcr`: the radiologist-mimic cross-modality expression relationships (RCR), the code's ``feature_chosen``:
  the fused ``width``-channel map holds one quarter per modality slot, in the code's order T1, T1c, T2,
  FLAIR; an available modality fills its slot with its own quarter 0, a missing one's slot is lent by the
  first available donor in `DONORS` (its quarter standing in for the missing modality).
- `rcr_distillation`: the code's ``missing_klloss`` (commit 73cd4bb, "KL Loss"): for every ordered pair of
  available modalities (a, b), KL(softmax over channels of b's quarter 0 || a's quarter standing in for b),
  on the stem convs' outputs (before the CSA block), mean over elements.
- `DeMoSegUNet`: the nnU-Net around it: encoder stages of a stride-2 conv unit and a CSA block (channels
  width * 2^k, at most ``max_width``), transposed-conv decoder with a conv unit and a CSA block per level,
  a 1x1 head (no bias) per level for deep supervision.

Sizes the code never sees (patches not divisible by 2^pools): the transposed conv's output is cropped to
the skip's size, and instance norm of a one-voxel map returns its limit (zeros, then the affine shift).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: LeakyReLU slope of nnU-Net's blocks.
SLOPE = 1e-2
#: The code's modality order (its input channels: T1, T1ce, T2, FLAIR), which is also the order of the
#: quarters of the fused stem map.
SLOTS = ("T1", "T1c", "T2", "FLAIR")
#: What quarter j of modality m's stem map expresses (quarter 0: m itself).
QUARTERS = {"T1": ("T1", "T1c", "T2", "FLAIR"), "T1c": ("T1c", "T1", "FLAIR", "T2"),
            "T2": ("T2", "FLAIR", "T1", "T1c"), "FLAIR": ("FLAIR", "T2", "T1c", "T1")}
#: Who lends a quarter to a missing modality's slot, first available first (the code's 15-case table).
DONORS = {"T1": ("T1c", "T2", "FLAIR"), "T1c": ("T1", "FLAIR", "T2"), "T2": ("FLAIR", "T1", "T1c"), "FLAIR": ("T2", "T1c", "T1")}


class InstanceNorm3d(nn.InstanceNorm3d):
    """Instance norm that also takes one-voxel maps, where it returns the formula's limit (zeros, then the affine
    shift) instead of torch's error."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2:].numel() > 1:
            return super().forward(x)
        out = torch.zeros_like(x)
        if self.affine:
            out = out + self.bias.view(1, -1, 1, 1, 1)
        return out


class ConvNormAct(nn.Module):
    """``ConvDropoutNormNonlin`` (dropout p=0): conv (3x3x3, bias) -> instance norm (affine) -> LeakyReLU(0.01)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, 3, stride, 1)
        self.instnorm = InstanceNorm3d(c_out, eps=1e-5, affine=True)
        self.lrelu = nn.LeakyReLU(SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lrelu(self.instnorm(self.conv(x)))


class CSA(nn.Module):
    """The code's ``CSA``: conv, norm, LeakyReLU, then x + x with channels reordered by the score's argsort."""

    def __init__(self, channels: int, small_first: bool = False, ratio: float = 0.25) -> None:
        super().__init__()
        self.inconv = nn.Conv3d(channels, channels, 3, 1, 1)
        self.innorm = InstanceNorm3d(channels)
        self.lrelu = nn.LeakyReLU(SLOPE, inplace=True)
        self.ch_order = nn.Sequential(nn.Linear(channels, int(channels * ratio)), nn.LeakyReLU(SLOPE, inplace=True),
                                      nn.Linear(int(channels * ratio), channels), nn.Sigmoid())
        self.sort_small_first = small_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lrelu(self.innorm(self.inconv(x)))
        order = torch.argsort(self.ch_order(x.mean(tuple(range(2, x.ndim)))), descending=not self.sort_small_first)
        return x + x.gather(1, order.view(*order.shape, *[1] * (x.ndim - 2)).expand_as(x))


class CSABlock(nn.Module):
    """``CSADropoutNormNonlin``: CSA -> instance norm (affine) -> LeakyReLU(0.01)."""

    def __init__(self, channels: int, small_first: bool = False) -> None:
        super().__init__()
        self.conv = CSA(channels, small_first)
        self.instnorm = InstanceNorm3d(channels, eps=1e-5, affine=True)
        self.lrelu = nn.LeakyReLU(SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lrelu(self.instnorm(self.conv(x)))


class DecoupledStem(nn.Module):
    """FD: per modality (in ``modalities`` order) a conv unit (1 -> width) and a CSA block; T1's CSA sorts its
    scores ascending, the others' descending (the code's ``sort_small_first``)."""

    def __init__(self, modalities: tuple[str, ...], width: int) -> None:
        super().__init__()
        self.modalities = modalities
        self.convs = nn.ModuleList(ConvNormAct(1, width) for _ in modalities)
        self.csas = nn.ModuleList(CSABlock(width, small_first=m == "T1") for m in modalities)

    def modality(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Modality i's input, B x 1 x ... -> (its conv unit's output, its CSA block's output)."""
        pre = self.convs[i](x)
        return pre, self.csas[i](pre)


def rcr_sources(available: torch.Tensor, modalities: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample and slot (`SLOTS`): the index into ``modalities`` of the modality whose quarter fills it, and
    the quarter's index. ``available``: B x M booleans in ``modalities`` order."""
    index = {m: i for i, m in enumerate(modalities)}
    avail = available.to("cpu", torch.bool)
    src, quarter = torch.zeros(len(avail), len(SLOTS), dtype=torch.long), torch.zeros(len(avail), len(SLOTS), dtype=torch.long)
    for b, row in enumerate(avail.tolist()):
        for s, slot in enumerate(SLOTS):
            donor = slot if row[index[slot]] else next(d for d in DONORS[slot] if row[index[d]])
            src[b, s], quarter[b, s] = index[donor], QUARTERS[donor].index(slot)
    return src, quarter


def rcr(features: torch.Tensor, available: torch.Tensor, modalities: tuple[str, ...]) -> torch.Tensor:
    """The fused stem map, B x C x ...: ``features`` B x M x C x ... (per modality, ``modalities`` order), slot s
    of every sample filled as `rcr_sources` says (quarters of C/4 channels)."""
    b, m, c = features.shape[:3]
    src, quarter = (t.to(features.device) for t in rcr_sources(available, modalities))
    quarters = features.unflatten(2, (4, c // 4))  # B x M x 4 x C/4 x ...
    rows = torch.arange(b, device=features.device)[:, None]
    return quarters[rows, src, quarter].flatten(1, 2)  # B x 4 x C/4 x ... -> B x C x ...


def kl_mean(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """torch's KLDivLoss() (mean over elements) of log_softmax(student) against softmax(teacher), over dim 1."""
    return F.kl_div(F.log_softmax(student, 1), F.softmax(teacher, 1), reduction="none").mean()


def rcr_distillation(pre: torch.Tensor, available: torch.Tensor, modalities: tuple[str, ...]) -> torch.Tensor:
    """The code's KL term before its 0.5: per sample, the sum over ordered pairs (a, b) of distinct available
    modalities of KL(b's quarter 0 || a's quarter for b); summed over samples. ``pre``: B x M x C x ... (the stem
    convs' outputs)."""
    q = pre.shape[2] // 4
    total = pre.new_zeros(())
    for b, row in enumerate(available.to("cpu", torch.bool).tolist()):
        present = [m for m, ok in zip(modalities, row) if ok]
        for a in present:
            for t in present:
                if a != t:
                    j = QUARTERS[a].index(t)
                    ia, it = modalities.index(a), modalities.index(t)
                    total = total + kl_mean(pre[b : b + 1, ia, j * q : (j + 1) * q], pre[b : b + 1, it, :q])
    return total


def stage_widths(width: int, pools: int, max_width: int) -> list[int]:
    """Channels per stage, full resolution first (nnU-Net: base * 2^k, capped)."""
    return [min(width * 2**k, max_width) for k in range(pools + 1)]


class DeMoSegUNet(nn.Module):
    """The U-Net after the stem (the code's ``DeMoSeg`` without its input masking): ``conv_blocks_context[0]`` is
    the `DecoupledStem`; `forward` takes the fused stem map and returns the logits of every decoder level, full
    resolution first."""

    def __init__(self, modalities: tuple[str, ...], n_classes: int, width: int = 32, pools: int = 5, max_width: int = 320) -> None:
        super().__init__()
        feats = stage_widths(width, pools, max_width)
        self.conv_blocks_context = nn.ModuleList([DecoupledStem(modalities, feats[0])])
        for c_in, c_out in zip(feats[:-1], feats[1:]):
            self.conv_blocks_context.append(nn.Sequential(ConvNormAct(c_in, c_out, stride=2), CSABlock(c_out, small_first=True)))
        rev = feats[::-1]
        self.tu = nn.ModuleList(nn.ConvTranspose3d(c_in, c_out, 2, 2, bias=False) for c_in, c_out in zip(rev[:-1], rev[1:]))
        self.conv_blocks_localization = nn.ModuleList(
            nn.Sequential(ConvNormAct(2 * c, c), CSABlock(c, small_first=True)) for c in rev[1:])
        self.seg_outputs = nn.ModuleList(nn.Conv3d(c, n_classes, 1, bias=False) for c in rev[1:])
        for module in self.modules():  # InitWeights_He(1e-2)
            if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(module.weight, a=SLOPE)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @property
    def stem(self) -> DecoupledStem:
        return self.conv_blocks_context[0]

    def forward(self, x: torch.Tensor, heads: bool = True) -> list[torch.Tensor]:
        skips = [x]
        for block in self.conv_blocks_context[1:]:
            skips.append(block(skips[-1]))
        x = skips.pop()
        out = []
        for i, (tu, block, head) in enumerate(zip(self.tu, self.conv_blocks_localization, self.seg_outputs)):
            skip = skips.pop()
            up = tu(x)
            up = up[(..., *[slice(0, s) for s in skip.shape[2:]])]
            x = block(torch.cat([up, skip], 1))
            if heads or i == len(self.tu) - 1:
                out.append(head(x))
        return out[::-1]


def dice_ce(logits: torch.Tensor, index: torch.Tensor, smooth: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """(Dice, CE) of MONAI's ``DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)`` (the code's
    BaseTrainer.get_loss): Dice per sample and foreground class, 1 - (2 sum pt + 1e-5) / (sum p + sum t + 1e-5),
    averaged; cross-entropy of the logits over all classes, averaged over voxels. ``index``: B x ... class indices."""
    probs = torch.softmax(logits, 1)
    onehot = F.one_hot(index, logits.shape[1]).movedim(-1, 1).to(probs.dtype)
    dims = tuple(range(2, logits.ndim))
    p, t = probs[:, 1:], onehot[:, 1:]
    dice = 1 - (2 * (p * t).sum(dims) + smooth) / (p.sum(dims) + t.sum(dims) + smooth)
    return dice.mean(), F.cross_entropy(logits, index)


def deep_supervision_weights(n: int) -> list[float]:
    """The code's weights of the ``n`` outputs, full resolution first: 1, 1/2, 1/4, ..., the coarsest 0, normalised."""
    w = [0.5**i for i in range(n)]
    if n > 1:
        w[-1] = 0.0
    return [v / sum(w) for v in w]
