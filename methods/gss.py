"""GSS: category-aware group self-support learning, a training plug-in, here on RFNet as the paper's code ships it.

Paper: Y. Qiu, D. Chen, H. Yao, Y. Xu, Z. Wang, "Scratch Each Other's Back: Incomplete Multi-Modal Brain
Tumor Segmentation via Category Aware Group Self-Support Learning", ICCV 2023, pp. 21317-21326 (abstract:
within each prediction category the modalities' predictions form a group whose most sensitive prediction
leads; leader and members agree on a communal learning target; a random mask reduces biases; no
architectural change). The paper's full text was not available offline here: every formula below is read
from the official code, github.com/qysgithubopen/GSS at 4af911815a5cc8d619de955a277555c7600d9b46 (no licence
file: re-implemented, nothing copied): train_GSS.py, GSS_choice.py, random_mask.py, GSS.sh, models_GSS.py
(= RFNet's models.py returning the separate decoder's logits too), layers.py and utils/criterions.py
(identical to RFNet's, github.com/dyh127/RFNet at 1e475fa5de4ac3f41f8de3d3102bb8b28383c2c4). Blocks:
missbench/nets/rfnet.py (the network) and missbench/nets/gss.py (the self-support target).

What is built:
- RFNet (``backbone="paper"`` of methods/rfnet.py, the same modules and names): four modality encoders
  (width 16, stages 16/32/64/128), the region-aware fusion decoder, the shared separate decoder, Kaiming
  init; 8,984,960 parameters at width 16, the code's count (GSS adds none).
- Loss after the RFNet phase (train_GSS.py): fuse + 0.7 x sep + prm + 0.3 x T^2 / 10 x gss, where fuse,
  sep (summed over modalities) and prm (summed over the four region maps, upsampled) are RFNet's weighted
  CE + Dice, and gss is the self-support term: per class, a soft target from the four separate
  predictions (nets/gss.py: leaders FLAIR for background, T1c for the necrotic core and the enhancing
  tumour, FLAIR and T2 for the oedema; thresholds 0.75 (``leader_threshold``, TP) and 0.85
  (``member_threshold``, TM), ``double_p`` 0.3 (DTP)), normalised over classes and computed without
  gradient; each modality's separate prediction softened at ``temperature`` 8 (TEMP) is trained toward it
  with RFNet's weighted CE on soft targets after ``mask_ratio`` 0.2 of its voxel positions (drawn per
  student, with replacement) are zeroed in both (random_mask.py). train_GSS.py never gates the fused term.
- The RFNet phase: GSS.sh trains GSS from RFNet's released checkpoint (300 epochs of RFNet), then three
  GSS runs of 300 epochs each (a fourth and fifth load checkpoints the script never writes, so they stop
  at start), each from the previous one's last checkpoint. Here one run: the first ``pretrain`` = 1/4 of
  the budget is RFNet's training (its loss, the fused term off for the first ``fusion_start`` 20/300 of
  that phase), the rest GSS's. ``pretrain=0``: train_GSS.py from scratch.
- Output "labels" (softmax over 0/1/2/4); evaluation returns the fused logits only.

Paper/code vs this harness, and options:
- ``gss_over``: the code's separate decoders always see the real images of all four modalities, since its
  masks act on fused features only; here a missing modality's input is already zero. "complete"
  (default): the self-support term over the samples with all four modalities present, the only ones on
  which the code's target can be computed from the inputs the code uses; under uniform subset dropping
  that is 1 sample in 15. "all": over every sample, the target then built from zero-input predictions too.
- ``sep_over``: as RFNet's: "available" (default) the separate decoder's CE + Dice over the (sample,
  modality) pairs present, "all" the code's four terms over every sample.
- The code's member-mean term of the single-leader target is masked to zero everywhere (nets/gss.py
  explains how); it is computed as the code computes it, so the target is 0 where the leader is unsure and
  every member is confident. In the double-leader target the one-leader term also counts where both lead.
- Deviations: one poly schedule over the budget (GSS.sh restarts the poly schedule and Adam at every
  run, and steps it per epoch of 150 iterations); RFNet's released checkpoint is not the starting point
  (the RFNet phase trains it, on the harness's data); augmentation is the harness's.

Training defaults (train_GSS.py, GSS.sh; RFNet's): Adam (amsgrad, betas 0.9/0.999), lr 2e-4, weight decay
1e-4, poly 0.9, subsets uniform over the 15 per sample (data/datasets_nii.py), batch 2 at 80^3.

Official checkpoints (``official_state_dict``): the released GSS model (BraTS2020; README) is "fully compatible
with the RFNet code": models.py ``Model`` keys, read as RFNet's are (missbench/nets/rfnet_official.py:
renames, and the weights that read the modalities by position reordered from the code's FLAIR, T1ce, T1, T2).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from missbench.core.method import Method, Output, modality_slots
from missbench.core.params import Between, OneOf
from missbench.core.tasks.segmentation import labels_onehot
from missbench.core.training import TrainingDefaults
from missbench.nets.gss import group_soft_target, random_voxel_keep
from missbench.nets.rfnet import FusionDecoder, RFNetEncoder, SepDecoder, batch_dice_loss, init_kaiming, softmax_weighted_ce
from missbench.nets.rfnet_official import rfnet_state_dict

#: The code's order of the four students (flair, t1ce, t1, t2 in train_GSS.py): the order of the random-mask draws.
CODE_ORDER = ("FLAIR", "T1c", "T1", "T2")


class GSS(Method):
    name = "gss"
    citation = "Qiu et al., ICCV 2023 (on RFNet); code github.com/qysgithubopen/GSS"
    outputs = {"segmentation": "labels"}
    own_task_loss = True  # deep supervision: the paper's loss on the fused and the separate outputs
    defaults = {
        "width": 16,
        "temperature": 8.0,
        "leader_threshold": 0.75,
        "member_threshold": 0.85,
        "double_p": 0.3,
        "mask_ratio": 0.2,
        "sep_weight": 0.7,
        "gss_weight": 0.3,
        "pretrain": 0.25,
        "fusion_start": 20 / 300,
        "gss_over": "complete",
        "sep_over": "available",
    }
    constraints = {
        "width": Between(4, even=True), "temperature": Between(0, low_open=True),
        "leader_threshold": Between(0, 1), "member_threshold": Between(0, 1), "double_p": Between(0, 1),
        "mask_ratio": Between(0, 1, high_open=True), "sep_weight": Between(0), "gss_weight": Between(0),
        "pretrain": Between(0, 1, high_open=True), "fusion_start": Between(0, 1),
        "gss_over": OneOf("complete", "all"), "sep_over": OneOf("available", "all"),
    }
    training_defaults = {"segmentation": TrainingDefaults(
        optimizer="adam", lr=2e-4, weight_decay=1e-4, amsgrad=True, schedule="poly", dropout="uniform_subset",
        warmup_fraction=0.0,
    )}
    official_code = "github.com/qysgithubopen/GSS at 4af911815a5cc8d619de955a277555c7600d9b46, models_GSS.py, Model (RFNet's models.py layout)"

    def __init__(self, task, modalities: tuple[str, ...], **params: Any) -> None:
        super().__init__(task, modalities, **params)
        #: Index into ``modalities`` of each of the code's four students, in its order.
        self.students = modality_slots(self.name, self.modalities, CODE_ORDER)
        m, out, w = self.n_modalities, task.out_channels(self.output), self.params["width"]
        self.encoders = nn.ModuleList(RFNetEncoder(1, w, 4) for _ in range(m))
        self.fusion = FusionDecoder(w, 4, out, m)
        self.sep = SepDecoder(w, 4, out)
        init_kaiming(self)

    def encode(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per modality: its encoder pyramid, highest resolution first."""
        return [enc(x[:, i : i + 1]) for i, enc in enumerate(self.encoders)]

    def in_rfnet_phase(self) -> bool:
        return self.step < self.params["pretrain"] * self.total_steps

    def decode(self, features: list[list[torch.Tensor]], available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        p = self.params
        levels = [torch.stack([f[k] for f in features], 1) for k in range(len(features[0]))]  # B x M x C x ...
        available = available.to(levels[0].device)
        logits, prms = self.fusion(levels, available)
        out = Output(logits)
        if target is None:
            return out
        onehot = labels_onehot(target).to(logits.dtype)
        rfnet = self.in_rfnet_phase()
        on = 0.0 if self.step < p["fusion_start"] * p["pretrain"] * self.total_steps else 1.0
        ce, dice = pair_loss(torch.softmax(logits, 1), onehot)
        out.losses["fuse_ce"], out.losses["fuse_dice"] = on * ce, on * dice
        size = target.shape[1:]
        terms = [pair_loss(F.interpolate(q, size=size, mode="trilinear", align_corners=True) if q.shape[2:] != size else q, onehot)
                 for q in prms]
        out.losses["prm_ce"], out.losses["prm_dice"] = sum(t[0] for t in terms), sum(t[1] for t in terms)
        # The separate decoder, once, on every (sample, modality) pair a term needs.
        sep_pairs = available if p["sep_over"] == "available" else torch.ones_like(available)
        gss_rows = available.all(1) if p["gss_over"] == "complete" else torch.ones_like(available[:, 0])
        if rfnet:
            gss_rows = torch.zeros_like(gss_rows)
        needed = sep_pairs | gss_rows[:, None]
        b_idx, m_idx = needed.nonzero(as_tuple=True)
        sep_logits = self.sep([lv[b_idx, m_idx] for lv in levels])
        sep_probs = torch.softmax(sep_logits, 1)
        weight = 1.0 if rfnet else p["sep_weight"]
        sep_ce, sep_dice = logits.new_zeros(()), logits.new_zeros(())
        for m in range(self.n_modalities):
            rows = ((m_idx == m) & sep_pairs[b_idx, m_idx]).nonzero().flatten()
            if len(rows):
                ce, dice = pair_loss(sep_probs[rows], onehot[b_idx[rows]])
                sep_ce, sep_dice = sep_ce + ce, sep_dice + dice
        out.losses["sep_ce"], out.losses["sep_dice"] = weight * sep_ce, weight * sep_dice
        gss = logits.new_zeros(())  # the RFNet phase: no self-support (a zero term, so the terms keep their names)
        if gss_rows.any():
            t = p["temperature"]
            picked = {self.modalities[m]: ((m_idx == m) & gss_rows[b_idx]).nonzero().flatten() for m in range(self.n_modalities)}
            soft = {name: torch.softmax(sep_logits[rows] / t, 1) for name, rows in picked.items()}
            with torch.no_grad():
                target_soft = group_soft_target({n: sep_probs[r].detach() for n, r in picked.items()},
                                                {n: s.detach() for n, s in soft.items()},
                                                p["leader_threshold"], p["member_threshold"], p["double_p"])
            for name in CODE_ORDER:
                keep = random_voxel_keep(target_soft.shape, p["mask_ratio"], target_soft.device).to(target_soft.dtype)
                gss = gss + softmax_weighted_ce(soft[name] * keep, target_soft * keep)
            gss = p["gss_weight"] * t * t / 10 * gss
        out.losses["gss_ce"] = gss
        return out

    def official_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The code's ``models_GSS.Model`` state dict (``torch.load(ckpt)['state_dict']``; RFNet's layout) as this module's."""
        return rfnet_state_dict(state, self.name, self.modalities)


def pair_loss(probs: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted CE, Dice) of one prediction: RFNet's criterions."""
    return softmax_weighted_ce(probs, onehot), batch_dice_loss(probs, onehot)
