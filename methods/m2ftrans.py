"""M2FTrans: modality-masked fusion transformer for incomplete multi-modality brain-tumour segmentation.

Paper: J. Shi, L. Yu, Q. Cheng, X. Yang, K.-T. Cheng, Z. Yan, "M2FTrans: Modality-Masked Fusion Transformer
for Incomplete Multi-Modality Brain Tumor Segmentation", IEEE JBHI 28(1):379-390, 2024, doi
10.1109/JBHI.2023.3326151 (abstract: learnable fusion tokens and masked self-attention build cross-modal
long-range dependencies robust to missing tokens; modality features re-weighted by spatial weight attention
and channel-wise fusion transformers). The paper's full text was not available offline here; the model is
read from the official code, github.com/Jun-Jie-Shi/M2FTrans (MIT licence) at
03a0b28ae03ad1a7dea5fb874c7b47c1439caa34, M2FTrans_v1 (the RFNet-based framework of the paper):
models/fusiontrans.py ``Model``, models/blocks.py, models/mask.py, layers.py, train.py, train.sh,
utils/criterions.py, utils/lr_scheduler.py, data/datasets_nii.py. Blocks: missbench/nets/m2ftrans.py (and
RFNet's separate decoder and criterions, missbench/nets/rfnet.py).

What is built, as in the code:
- per modality an RFNet-style encoder with five stages (width 16: 16, 32, 64, 128, 256 channels; conv ->
  instance norm -> LeakyReLU(0.2), reflect padding);
- the bottleneck tokens of the four modalities (256-d, one per 1/16-scale voxel) and as many learnable
  fusion tokens (N(0, 1) at init), plus a learnable positional table over all of them (zeros at init),
  through a masked transformer (3 pre-norm blocks, 8 heads, MLP 4096, dropout 0.1; models/mask.py's
  mask: a modality's tokens attend to their own modality only, the fusion tokens to themselves and to
  every available modality);
- spatial weight attention: the first block's attention of the fusion tokens to each modality's tokens,
  summed over heads and fusion tokens, gives one weight per bottleneck voxel and modality (exactly 0 for a
  missing one); it multiplies that modality's transformer output and, upsampled by nearest neighbour, its
  encoder maps at every scale (the attention is detached, as the code's ``attn.detach()``);
- the fusion decoder: channel-wise fusion transformers (two ``MultiMaskCrossBlock`` layers: the decoder
  feature's channels attend to all available modalities' channels) at 1/16 (queries: the fusion tokens'
  map) and 1/8 scale, ``fusion_postnorm`` over the masked concatenated weighted skips at 1/4, 1/2 and 1, and
  a region map (``prm_fusion``: softmax over the classes) from the decoder feature at each of the 5 scales;
- RFNet's shared separate decoder on each modality's raw encoder maps (training only);
- loss (train.py, region_fusion_start_epoch 0): fuse + sum over modalities of sep + sum over the five
  region maps (upsampled, trilinear) of prm, each RFNet's weighted CE + Dice (utils/criterions.py), weight 1;
- Kaiming-normal init of every Conv3d weight; 45,429,660 parameters at the defaults, the code's ``Model``
  count (counted by building it; tests/test_m2ftrans.py).

The code fixes its token grid to 5^3 (80^3 patches, ``patch_size = 5``). Here the positional table and the
fusion tokens are stored at ``pos_grid``^3 (default 5) and resampled trilinearly to the actual bottleneck grid
when the patch is not 16 x pos_grid per side (`missbench.nets.mmformer.resize_positions`); at 80^3 nothing is
resampled. Maps of one voxel (16^3 patches) use replicate padding and the instance-norm limit (nets/m2ftrans.py).

Published numbers: the paper's BraTS2018 table is of split 1 only (U-HVED / RFNet split 1), not the mean of
the three splits: the maintainer in github.com/Jun-Jie-Shi/M2FTrans issue #8 (2024-12-23), and train.py reads
train1.txt / test1.txt.

Paper/code vs this harness, and options:
- ``sep_over``: as RFNet's and mmFormer's: the code's separate decoder always sees the real images of all
  four modalities (its masks act on features); here a missing input is zero. "available" (default): the
  separate terms over the (sample, modality) pairs present; "all": the code's four terms over every sample.
- training (train.py, train.sh): the code uses AdamW (amsgrad, betas 0.9/0.999, decoupled weight decay 1e-4),
  lr 2e-4, a linear warm-up over the first 100 of 1000 epochs then poly 0.9 (``warmuppoly``), stepped per epoch,
  batch 4 at 80^3, subsets uniform over the 15. The harness has Adam with L2 weight decay and no learning-rate
  warm-up: Adam (amsgrad) lr 2e-4, weight decay 1e-4 (coupled), poly 0.9 per iteration.
- augmentation is the harness's (the code: random rotation, intensity shift, flips).

Official checkpoints (``official_state_dict``; the README's Google Drive models, ``torch.load(ckpt)['state_dict']``):
the code's input order is FLAIR, T1ce, T1, T2 (RFNet's preprocess.py). Renamed: per-modality encoders and the
channel-wise transformers' key/value maps by modality name, ``Bottleneck.trans_bottle`` to ``trans_bottle``,
the separate decoder's levels as RFNet's. Reordered to the data set's order: the positional table's modality
blocks and the first conv of ``RFM1``..``RFM3`` (the masked skips concatenated modality by modality). The rest
is position-free: the masked attention, the spatial weights and the channel attention treat the modalities as a
set. Checked in tests/test_m2ftrans.py against numbers the code computes (scripts/official_parity_2024.py).
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from missbench.core.method import Method, Output, modality_slots, permute_blocks
from missbench.core.params import Between, OneOf
from missbench.core.tasks.segmentation import labels_onehot
from missbench.core.training import TrainingDefaults
from missbench.nets.m2ftrans import (
    Encoder,
    FusionDecoder,
    MaskedTransformer,
    fusion_attention_mask,
    nearest_to,
    spatial_weights,
)
from missbench.nets.mmformer import map_from_tokens, resize_positions, tokens_from_map
from missbench.nets.rfnet import SepDecoder, batch_dice_loss, softmax_weighted_ce
from missbench.nets.rfnet_official import CODE_MODALITIES, decoder_key

DOWNSAMPLING = 16


class M2FTrans(Method):
    name = "m2ftrans"
    citation = "Shi et al., IEEE JBHI 2024, doi 10.1109/JBHI.2023.3326151; code github.com/Jun-Jie-Shi/M2FTrans"
    outputs = {"segmentation": "labels"}
    own_task_loss = True  # deep supervision: the paper's loss on the fused and the separate outputs
    defaults = {
        "width": 16,  # basic_dims; the transformer's dimension is 16 x width
        "mlp_dim": 4096,
        "heads": 8,
        "layers": 3,  # the masked transformer's depth
        "cross_layers": 2,  # layers of each channel-wise fusion transformer
        "expand": 4,  # their feed-forwards' expansion
        "dropout": 0.1,
        "pos_grid": 5,  # the code's patch_size: 80^3 input / 16
        "sep_over": "available",
    }
    constraints = {
        **{key: Between(1, integer=True) for key in ("width", "mlp_dim", "heads", "layers", "cross_layers", "expand", "pos_grid")},
        "dropout": Between(0, 1, high_open=True), "sep_over": OneOf("available", "all"),
    }
    training_defaults = {"segmentation": TrainingDefaults(
        optimizer="adam", lr=2e-4, weight_decay=1e-4, amsgrad=True, schedule="poly", dropout="uniform_subset",
        warmup_fraction=0.0,
    )}
    official_code = "github.com/Jun-Jie-Shi/M2FTrans at 03a0b28ae03ad1a7dea5fb874c7b47c1439caa34, M2FTrans_v1/models/fusiontrans.py, Model"

    def __init__(self, task, modalities: tuple[str, ...], **params: Any) -> None:
        super().__init__(task, modalities, **params)
        p = self.params
        m, w, g, out = self.n_modalities, p["width"], p["pos_grid"], task.out_channels(self.output)
        self.dim = dim = 16 * w
        if dim % p["heads"]:
            raise ValueError(f"m2ftrans: the transformer's dimension 16 x width = {dim} is not divisible by heads {p['heads']}")
        self.encoders = nn.ModuleList(Encoder(w) for _ in range(m))
        self.trans_bottle = MaskedTransformer(dim, p["layers"], p["heads"], p["mlp_dim"], p["dropout"])
        self.decoder_fusion = FusionDecoder(w, out, m, p["cross_layers"], p["expand"], p["dropout"])
        self.decoder_sep = SepDecoder(w, 5, out)
        #: Positional table: one block of pos_grid^3 tokens per modality (``modalities`` order), then the fusion tokens'.
        self.pos = nn.Parameter(torch.zeros(1, (m + 1) * g**3, dim))
        self.fusion = nn.Parameter(nn.init.normal_(torch.zeros(1, g**3, dim), 0.0, 1.0))
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight)

    def encode(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per modality: its five encoder maps, full resolution first."""
        if any(s % DOWNSAMPLING for s in x.shape[2:]):
            raise ValueError(f"m2ftrans: input spatial size {tuple(x.shape[2:])} must be a multiple of {DOWNSAMPLING} per side")
        return [enc(x[:, i : i + 1]) for i, enc in enumerate(self.encoders)]

    def table(self, table: torch.Tensor, blocks: int, grid: tuple[int, ...]) -> torch.Tensor:
        """``table`` (1 x blocks*pos_grid^3 x dim) with each block resampled to ``grid``."""
        g = (self.params["pos_grid"],) * 3
        return torch.cat([resize_positions(t, g, grid) for t in table.chunk(blocks, 1)], 1)

    def decode(self, features: list[list[torch.Tensor]], available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        m, ref = self.n_modalities, features[0][-1]
        b, grid = ref.shape[0], tuple(ref.shape[2:])
        n = math.prod(grid)
        available = available.to(ref.device)
        tokens = torch.cat([*(tokens_from_map(f[-1]) for f in features), self.table(self.fusion, 1, grid).expand(b, -1, -1)], 1)
        out_tokens, attns = self.trans_bottle(tokens + self.table(self.pos, m + 1, grid), fusion_attention_mask(available, n))
        weights = spatial_weights(attns[0], m, grid)
        tokens5 = [map_from_tokens(out_tokens[:, i * n : (i + 1) * n], grid) * weights[i] for i in range(m)]
        fused = map_from_tokens(out_tokens[:, m * n :], grid)
        skips = [[f[k] * nearest_to(weights[i], f[k]) for i, f in enumerate(features)] for k in range(4)]
        logits, prms = self.decoder_fusion(skips, tokens5, fused, available, prms=target is not None)
        out = Output(logits)
        if target is None:
            return out
        onehot = labels_onehot(target).to(logits.dtype)
        out.losses["fuse_ce"], out.losses["fuse_dice"] = pair_loss(torch.softmax(logits, 1), onehot)
        size = target.shape[1:]
        terms = [pair_loss(F.interpolate(q, size=size, mode="trilinear", align_corners=True) if q.shape[2:] != size else q, onehot)
                 for q in prms]
        out.losses["prm_ce"], out.losses["prm_dice"] = sum(t[0] for t in terms), sum(t[1] for t in terms)
        sep_ce, sep_dice = logits.new_zeros(()), logits.new_zeros(())
        for i, f in enumerate(features):
            rows = available[:, i] if self.params["sep_over"] == "available" else torch.ones_like(available[:, i])
            if rows.any():
                ce, dice = pair_loss(torch.softmax(self.decoder_sep([t[rows] for t in f]), 1), onehot[rows])
                sep_ce, sep_dice = sep_ce + ce, sep_dice + dice
        out.losses["sep_ce"], out.losses["sep_dice"] = sep_ce, sep_dice
        return out

    # --- official checkpoints ---

    def official_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The code's ``fusiontrans.Model`` state dict (``torch.load(ckpt)['state_dict']``) as this module's: renames,
        and the positional table's blocks and ``RFM1``..``RFM3``'s first conv reordered from the code's FLAIR, T1ce,
        T1, T2 to ``modalities``."""
        slots = modality_slots(self.name, self.modalities, tuple(CODE_MODALITIES.values()))
        index = dict(zip(CODE_MODALITIES, slots))
        order = [slots.index(i) for i in range(self.n_modalities)]  # our modality i is the code's order[i]
        names = "|".join(CODE_MODALITIES)
        out = {}
        for key, value in state.items():
            key = key.removeprefix("module.")
            key = re.sub(rf"^({names})_encoder\.", lambda g: f"encoders.{index[g[1]]}.", key)
            key = re.sub(r"^Bottleneck\.trans_bottle\.", "trans_bottle.", key)
            key = re.sub(rf"\.(key|value)_map_({names})\.", lambda g: f".{g[1]}_maps.{index[g[2]]}.", key)
            if key.startswith("decoder_sep."):
                key = "decoder_sep." + decoder_key(key.removeprefix("decoder_sep."))
            if key == "pos":
                value = permute_blocks(value, 1, [*order, self.n_modalities])
            elif re.fullmatch(r"decoder_fusion\.RFM\d\.fusion_layer\.0\.conv\.weight", key):
                value = permute_blocks(value, 1, order)
            out[key] = value
        return out


def pair_loss(probs: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted CE, Dice) of one prediction: RFNet's criterions, which M2FTrans's utils/criterions.py keeps."""
    return softmax_weighted_ce(probs, onehot), batch_dice_loss(probs, onehot)
