"""RFNet: region-aware fusion for incomplete multi-modal brain-tumour segmentation.

Paper: Y. Ding, X. Yu, Y. Yang, "RFNet: Region-aware Fusion Network for Incomplete Multi-modal
Brain Tumor Segmentation", ICCV 2021.
Official code: github.com/dyh127/RFNet (models.py, layers.py, train.py, job.sh; the loss functions
of utils/criterions.py as mmFormer ships them). Building blocks: missbench/nets/rfnet.py.

What is built (``backbone="paper"``, the default):
- 4 modality encoders (one per modality, not shared), base width 16, stages 16/32/64/128, stride-2
  conv downsampling; each stage a conv-IN-LeakyReLU(0.2) unit then two units added back
  (residual); reflect padding; Kaiming-normal conv weights;
- missing modalities' *features* are zeroed at every scale before fusion (the code's
  ``y[mask] = x[mask]``); the harness has already zeroed their inputs;
- the fusion decoder with the Region-aware Fusion Module at each of the 4 scales: a probabilistic
  region map (softmax over the 4 classes BG/NCR/ED/ET) from the masked, concatenated features
  (and, below the deepest scale, the decoder feature); per region, per-modality sigmoid weights
  from the region-pooled features; the weighted region features fused (to C/2) and concatenated
  with a short-cut branch over the masked features (to C/2); U-Net decoding between scales;
- the shared separate decoder (``Decoder_sep``) on each modality's own encoder pyramid, training
  only (deep supervision of every encoder);
- loss (train.py) = fuse + sum over modalities of sep + sum over the 4 scales of prm, each term
  the code's weighted CE (on softmax probabilities clamped at 0.005, class weight 1 - its voxel
  fraction in the sample) plus its Dice (mean over the 4 classes, background included, sums
  over the batch, eps 1e-7); the region maps are upsampled to full resolution (trilinear) for
  their terms, as the code's up2/up4/up8. All weights 1.
- The fused term is multiplied by 0 before ``fusion_start`` of the budget (the code's
  ``region_fusion_start_epoch``): job.sh trains 300 epochs and passes 20, so the default is
  20/300 = 1/15 of the iterations (``self.step < fusion_start * self.total_steps``; 3,000 of the
  official 45,000). Like the code, the term is kept in the graph times 0, so Adam's weight decay
  still moves the fusion-only parameters during that phase.
- Output ``labels``: logits over 0/1/2/4 (RFNet's class 3 is label 4, the task's channel order).
  Evaluation returns the fused logits only.

Parameter count, ``backbone="paper"`` at width 16 with 4 modalities and 4 classes: 8,984,960
(each encoder 1,466,496; fusion decoder 2,532,588; shared separate decoder 586,388), the 8.98M of
the official code, counted from the modules in tests/test_rfnet.py.

``backbone="common"``: the harness's per-modality `UNetEncoder(1, width, depth)` (width 8, depth 3)
and `UNetDecoder` (missbench/nets/unet3d.py) with the RFNet mechanism inserted: masking, a region
map and an RFM at the bottleneck and at every skip scale (each decoder step: upsample, region map
from the upsampled feature and the masked skips, RFM, projection added, residual block), a shared
`UNetDecoder` as the separate decoder, and the same loss. 1,692,944 parameters (width 8, depth 3;
counted in the tests).

Paper vs code, and options:
- ``sep_over``: "available" (default): the separate decoder's terms are taken over the samples in
  which each modality is present. The code encodes all four real inputs whatever the mask, so its
  four terms always see real images; here a missing modality's input is already zero, and its
  term would train the decoder to segment a blank image. "all": the code's four terms over every
  sample (zero inputs included).
- ``width``: None picks the backbone's default (16 paper, 8 common); must be even and >= 4.

Training defaults (job.sh, train.py): Adam (betas 0.9/0.999, amsgrad), lr 2e-4, weight decay 1e-4,
poly power 0.9, modality subsets uniform over the 15 per sample (``uniform_subset``), no warm-up.

Official checkpoints (``official_state_dict``; the code's ``models.py`` ``Model``, with layers.py, at
commit 1e475fa5de4ac3f41f8de3d3102bb8b28383c2c4): its preprocess.py stacks FLAIR, T1ce, T1, T2 (the
data set's order is FLAIR, T1, T1c, T2) and its Model reads input channel k with the k-th modality's
encoder and mask entry k. Keys are renamed (encoders by modality name, ``e{s}_c1`` / ``_c2`` / ``_c3``
to ``down`` / ``body``, decoder level ``d{s}``, ``prm_generator{s}`` and ``RFM{s}`` to index s - 1),
and the weights that read or write the modalities by position are reordered to this module's order:
at each of the four scales the first conv of the region-map embedding (``prm_generator*.embedding_layer.0``)
and of the RFM's short-cut (``short_cut.0``), both over the masked features concatenated modality by
modality, and per region the weight MLP (``modal_fusion.*.weight_layer``: its first conv reads the
pooled features in that order, then the mean region probability; its last writes one weight per
modality). Everything else acts per modality or after the fusion. Checked in
tests/test_official_checkpoints.py against a transcription of the code's forward; renamed without the
reordering, softmax outputs are off by up to 0.99.

Deviations: the code steps the poly schedule once per epoch of 150 iterations, the
harness every iteration; upsampling is to the skip's size (the same as the code's x2 for sizes
divisible by 8, and also defined otherwise); data augmentation (rotation, intensity shift) is the
harness's, not the code's.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from missbench.core.method import Method, Output
from missbench.core.params import Between, OneOf
from missbench.core.training import TrainingDefaults
from missbench.nets.rfnet_official import rfnet_state_dict
from missbench.nets.rfnet import (
    FusionDecoder,
    RFNetEncoder,
    SepDecoder,
    batch_dice_loss,
    fuse_deepest,
    init_kaiming,
    region_fusion_modules,
    softmax_weighted_ce,
)
from missbench.nets.unet3d import UNetDecoder, UNetEncoder
from missbench.core.tasks.segmentation import labels_onehot

#: region_fusion_start_epoch / num_epochs in the official job.sh.
FUSION_START = 20 / 300
class CommonFusionDecoder(nn.Module):
    """The harness U-Net decoder with a region map and an RFM at the bottleneck and at every skip scale."""

    def __init__(self, skip_channels: list[int], bottleneck_channels: int, num_cls: int, n_modalities: int) -> None:
        super().__init__()
        self.decoder = UNetDecoder(1, skip_channels, bottleneck_channels, num_cls)
        self.prms, self.rfms = region_fusion_modules([*skip_channels, bottleneck_channels], n_modalities, num_cls)

    def forward(self, levels: list[torch.Tensor], available: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        masked, d, prms = fuse_deepest(self.prms, self.rfms, levels, available)
        dec = self.decoder
        for i, (up, proj, block) in enumerate(zip(dec.ups, dec.projs, dec.blocks)):
            k = len(levels) - 2 - i
            x = up(d)
            if x.shape[2:] != masked[k].shape[3:]:
                x = F.interpolate(x, size=masked[k].shape[3:], mode="trilinear", align_corners=False)
            prm = self.prms[k](masked[k], x)
            prms.append(prm)
            d = block(x + proj(self.rfms[k](masked[k], prm.detach())))
        return dec.head(d), prms[::-1]


class RFNet(Method):
    name = "rfnet"
    citation = "Ding, Yu, Yang, ICCV 2021; code github.com/dyh127/RFNet"
    outputs = {"segmentation": "labels"}
    own_task_loss = True  # deep supervision: the paper's loss on the fused and the separate outputs
    defaults = {
        "backbone": "paper",
        "width": None,
        "depth": 3,
        "fusion_start": FUSION_START,
        "sep_over": "available",
    }
    constraints = {"backbone": OneOf("paper", "common"), "sep_over": OneOf("available", "all"),
                   "width": Between(4, even=True), "depth": Between(1, integer=True), "fusion_start": Between(0, 1)}
    training_defaults = {"segmentation": TrainingDefaults(
        optimizer="adam", lr=2e-4, weight_decay=1e-4, amsgrad=True, schedule="poly", dropout="uniform_subset",
        warmup_fraction=0.0, sampler="rfnet",
    )}
    official_code = "github.com/dyh127/RFNet at 1e475fa5de4ac3f41f8de3d3102bb8b28383c2c4, models.py, Model"

    def __init__(self, task, modalities: tuple[str, ...], **params: Any) -> None:
        super().__init__(task, modalities, **params)
        p = self.params
        if p["width"] is None:
            p["width"] = 16 if p["backbone"] == "paper" else 8
        m, out, w, stages = self.n_modalities, task.out_channels(self.output), p["width"], p["depth"] + 1
        if p["backbone"] == "paper":
            self.encoders = nn.ModuleList(RFNetEncoder(1, w, stages) for _ in range(m))
            self.fusion = FusionDecoder(w, stages, out, m)
            self.sep = SepDecoder(w, stages, out)
            init_kaiming(self)
        else:
            self.encoders = nn.ModuleList(UNetEncoder(1, w, p["depth"]) for _ in range(m))
            enc = self.encoders[0]
            self.fusion = CommonFusionDecoder(enc.skip_channels, enc.bottleneck_channels, out, m)
            self.sep = UNetDecoder(1, enc.skip_channels, enc.bottleneck_channels, out)

    def encode(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per modality: its encoder pyramid, highest resolution first (the bottleneck last)."""
        feats = []
        for i, enc in enumerate(self.encoders):
            f = enc(x[:, i : i + 1])
            feats.append(f if isinstance(f, list) else [*f.skips, f.bottleneck])
        return feats

    def separate_logits(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """The shared separate decoder on one batch of single-modality pyramids."""
        return self.sep(maps) if self.params["backbone"] == "paper" else self.sep(maps[-1], maps[:-1])

    def decode(self, features: list[list[torch.Tensor]], available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        levels = [torch.stack([f[k] for f in features], 1) for k in range(len(features[0]))]  # B x M x C x ...
        available = available.to(levels[0].device)
        logits, prms = self.fusion(levels, available)
        out = Output(logits)
        if target is None:
            return out
        onehot = labels_onehot(target)
        on = 0.0 if self.step < self.params["fusion_start"] * self.total_steps else 1.0
        ce, dice = self.pair_loss(torch.softmax(logits, 1), onehot)
        out.losses["fuse_ce"], out.losses["fuse_dice"] = on * ce, on * dice
        # Region maps, upsampled to full resolution (the code's up2/up4/up8).
        size = target.shape[1:]
        terms = [self.pair_loss(F.interpolate(p, size=size, mode="trilinear", align_corners=True) if p.shape[2:] != size else p, onehot)
                 for p in prms]
        out.losses["prm_ce"], out.losses["prm_dice"] = sum(t[0] for t in terms), sum(t[1] for t in terms)
        # Separate decoder: one batch of the (sample, modality) pairs it is trained on.
        pairs = available if self.params["sep_over"] == "available" else torch.ones_like(available)
        b_idx, m_idx = pairs.nonzero(as_tuple=True)
        sep_probs = torch.softmax(self.separate_logits([lv[b_idx, m_idx] for lv in levels]), 1)
        sep_ce, sep_dice = logits.new_zeros(()), logits.new_zeros(())
        for m in range(self.n_modalities):
            rows = (m_idx == m).nonzero().flatten()
            if len(rows):
                ce, dice = self.pair_loss(sep_probs[rows], onehot[b_idx[rows]])
                sep_ce, sep_dice = sep_ce + ce, sep_dice + dice
        out.losses["sep_ce"], out.losses["sep_dice"] = sep_ce, sep_dice
        return out

    @staticmethod
    def pair_loss(probs: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted CE, Dice) of one prediction, RFNet's criterions."""
        return softmax_weighted_ce(probs, onehot), batch_dice_loss(probs, onehot)

    def official_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The code's ``models.Model`` state dict (``torch.load(ckpt)['state_dict']``) as this module's
        (`missbench.nets.rfnet_official.rfnet_state_dict`: keys renamed, the weights that read or write the four
        modalities by position reordered from the code's FLAIR, T1c, T1, T2 to the data set's order)."""
        if self.params["backbone"] != "paper":
            raise ValueError("rfnet: official checkpoints are of backbone='paper'")
        return rfnet_state_dict(state, self.name, self.modalities)
