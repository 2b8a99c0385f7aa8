"""DeMoSeg: decoupling the feature representations of the ego and the other modalities.

Paper: K. Yang, W. Shan, X. Li, X. Wang, X. Yang, X. Wang, P.-A. Heng, Q. Li, Z. Wang, "Decoupling Feature
Representations of Ego and Other Modalities for Incomplete Multi-modal Brain Tumor Segmentation", IEEE BIBM
2024, pp. 3897-3902, arXiv 2408.08708 (abstract: two convolutions map each modality onto four feature
sub-spaces, the first expressing the modality itself (Self-feature), the others standing in for the other
modalities (Mutual-features); Channel-wised Sparse Self-Attention (CSSA) lets them guide each other; the
Radiologist-mimic Cross-modality expression Relationships (RCR) have available modalities lend Mutual-features
to the absent ones; a U-Net segments). The paper's full text was not available offline here; the model is
read from the official code, github.com/kk42yy/DeMoSeg (Apache-2.0) at
73cd4bbdcb3ec0c6fd352eb3c1811d5d2277503f: DeMoSeg/training/network/DeMoSeg.py (``DeMoSeg``), CSA_CSABlock.py
(``SplitConvCSA``, ``CSA``), ConvBlock.py, training/trainer/BaseTrainer.py and DeMoSeg_Trainer.py,
training/loss/loss_scheduler.py, inference/DeMoSeg_Predictor.py. Blocks: missbench/nets/demoseg.py.

What is built, as in the code:
- FD: per modality a conv unit (3x3x3 conv, instance norm, LeakyReLU 0.01) to 32 channels and a CSA block,
  the 32 channels read as four quarters (self, then the other three in a fixed order per modality);
- RCR: one 32-channel map per sample, quarter by quarter in the code's slot order T1, T1c, T2, FLAIR: an
  available modality's own quarter, or for a missing one the quarter a donor keeps for it (donor
  preferences from the code's 15-case table; checked case by case in tests/test_demoseg.py);
- an nnU-Net (6 stages, 32 to 320 channels, stride-2 conv downsampling, transposed-conv upsampling) whose
  every block is a conv unit then a CSA block, a 1x1 head per decoder level (deep supervision);
- CSA (the paper's CSSA): conv, instance norm, LeakyReLU, then x + x with its channels permuted per sample by
  the argsort of a squeeze-excitation score (C -> C/4 -> C, sigmoid); the argsort passes no gradient, so the
  score MLPs keep their initial weights, in the code as here. T1's stem CSA sorts ascending, every other
  CSA of the stem descending, every CSA after the stem ascending (the code's ``sort_small_first``);
- He init (a = 0.01) of conv and transposed-conv weights, zero biases; 31,527,192 parameters, the code's
  ``DeMoSeg(input_channels=4, base_num_features=32, num_classes=4, num_pool=5)`` count (counted by building it).
- Loss: MONAI's DiceCE (Dice over the foreground classes per sample, smooth 1e-5; CE over all classes) on
  each of the 5 outputs against the label map resized to its scale, weighted 1, 1/2, 1/4, 1/8, 0 and
  normalised (BaseTrainer.get_loss), plus ``kd_weight`` x the RCR distillation term (nets/demoseg.py).
- Output "labels" (softmax over 0/1/2/4); evaluation returns the full-resolution logits.

The distillation term (``kd_weight``): the released training code up to 2025 has none; commits ec865dc and
73cd4bb ("KL Loss", February 2026) add to ``SplitConvCSA`` a KL term between each available modality's
Self-feature and the Mutual-feature another available modality keeps for it (on the stem convs' outputs,
softmax over the quarter's channels, torch's ``KLDivLoss()``, summed over pairs and samples, times 0.5) and
add it to the segmentation loss, but leave ``DeMoSeg.forward`` unchanged, so the committed code does not pass
the term on (its training step would fail to unpack it). Here it is wired as those commits compute it,
``kd_weight=0.5`` by default (the authors' latest code; the arXiv abstract does not mention it); ``kd_weight=0``
is the code the released checkpoints were trained with.

Paper/code vs this harness (stated, not hidden):
- training (DeMoSeg_Trainer.py, BaseTrainer.py): SGD Nesterov 0.99, lr 1e-2, weight decay 3e-5, poly 0.9
  stepped per epoch (1000 epochs x 250 iterations, batch 2, 128^3 patches), subsets uniform over the 15 per
  sample (``torch.randint(0, 15)``). The code also clips gradients at norm 12 and trains with mixed precision;
  the harness does neither and steps the poly schedule per iteration.
- the deep-supervision labels are resized by the harness's nearest neighbour (torch's, index 2i); the code
  resizes with skimage (order 0), which can pick the other neighbour.
- inference: the code uses nnU-Net's sliding window with Gaussian weights and mirroring; the harness's own
  sliding window applies.
- augmentation is the harness's (the code: nnU-Net's batchgenerators pipeline).
- patches not divisible by 32 (the smoke budget's 16^3): the transposed conv's output is cropped to the
  skip's size and instance norm of a one-voxel map returns its limit (nets/demoseg.py); at 128^3 nothing changes.

Official checkpoints (``official_state_dict``; the README's BraTS2018 split 1, 2, 3 models, BraTS2020 and
BraTS2015, ``torch.load(model)['state_dict']``): the code's input order is T1, T1ce, T2, FLAIR
(DataAndOutput conversion, ``_0000`` .. ``_0003``). Only the stem is per modality (``t1_conv``, ``t1ce_csa``,
``t2flare_conv`` ...), renamed by modality name; RCR reads modalities by name, so nothing is reordered.
Checked in tests/test_demoseg.py against numbers the code computes (scripts/official_parity_2024.py).
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F

from missbench.core.method import Method, Output, modality_slots
from missbench.core.params import Between
from missbench.core.tasks.segmentation import label_index
from missbench.core.training import TrainingDefaults
from missbench.nets.demoseg import SLOTS, DeMoSegUNet, deep_supervision_weights, dice_ce, rcr, rcr_distillation

#: The code's stem prefixes and the data set names they stand for.
CODE_STEMS = {"t1": "T1", "t1ce": "T1c", "t2": "T2", "t2flare": "FLAIR"}


class DeMoSeg(Method):
    name = "demoseg"
    citation = "Yang et al., IEEE BIBM 2024, arXiv 2408.08708; code github.com/kk42yy/DeMoSeg"
    outputs = {"segmentation": "labels"}
    own_task_loss = True  # deep supervision: the paper's loss on the fused and the separate outputs
    defaults = {
        "width": 32,  # base_num_features
        "max_width": 320,
        "pools": 5,  # num_pool
        "deep_supervision": True,
        "kd_weight": 0.5,
    }
    constraints = {"width": Between(4, integer=True), "max_width": Between(4, integer=True), "pools": Between(1, integer=True),
                   "kd_weight": Between(0)}
    training_defaults = {"segmentation": TrainingDefaults(
        optimizer="sgd", lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5, schedule="poly",
        dropout="uniform_subset", warmup_fraction=0.0,
    )}
    official_code = "github.com/kk42yy/DeMoSeg at 73cd4bbdcb3ec0c6fd352eb3c1811d5d2277503f, DeMoSeg/training/network/DeMoSeg.py, DeMoSeg"

    def __init__(self, task, modalities: tuple[str, ...], **params: Any) -> None:
        super().__init__(task, modalities, **params)
        p = self.params
        modality_slots(self.name, self.modalities, SLOTS)  # RCR is defined on BraTS's four modalities
        if p["width"] % 4:
            raise ValueError(f"demoseg: width {p['width']} must be a multiple of 4 (the stem's four quarters)")
        self.net = DeMoSegUNet(self.modalities, task.out_channels(self.output), p["width"], p["pools"], p["max_width"])

    def encode(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per modality: (its stem conv's output, its stem CSA block's output), both B x width x ...."""
        return [self.net.stem.modality(i, x[:, i : i + 1]) for i in range(self.n_modalities)]

    def decode(self, features: list[tuple[torch.Tensor, torch.Tensor]], available: torch.Tensor,
               target: torch.Tensor | None = None) -> Output:
        p = self.params
        available = available.to(features[0][1].device)
        fused = rcr(torch.stack([f[1] for f in features], 1), available, self.modalities)
        deep = target is not None and p["deep_supervision"]
        outs = self.net(fused, heads=deep)
        out = Output(outs[0])
        if target is None:
            return out
        index = label_index(target)
        dice, ce = outs[0].new_zeros(()), outs[0].new_zeros(())
        for w, logits in zip(deep_supervision_weights(len(outs)), outs):
            if w == 0:
                continue
            scaled = index if logits.shape[2:] == index.shape[1:] else \
                F.interpolate(index[:, None].to(logits.dtype), size=logits.shape[2:], mode="nearest")[:, 0].long()
            d, c = dice_ce(logits, scaled)
            dice, ce = dice + w * d, ce + w * c
        out.losses["ds_dice"], out.losses["ds_ce"] = dice, ce
        if p["kd_weight"]:
            out.losses["kd"] = p["kd_weight"] * rcr_distillation(torch.stack([f[0] for f in features], 1), available, self.modalities)
        return out

    def official_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The code's ``DeMoSeg`` state dict (``torch.load(model)['state_dict']``) as this module's: the stem's
        per-modality modules renamed by modality name, every key under ``net.``."""
        index = {code: self.modalities.index(name) for code, name in CODE_STEMS.items()}
        out = {}
        for key, value in state.items():
            key = key.removeprefix("module.")
            key = re.sub(r"^conv_blocks_context\.0\.(t1|t1ce|t2|t2flare)_(conv|csa)\.",
                         lambda g: f"conv_blocks_context.0.{g[2]}s.{index[g[1]]}.", key)
            out["net." + key] = value
        return out
