"""ShaSpec: shared-specific feature modelling for missing modalities.

Paper: H. Wang, Y. Chen, C. Ma, J. Avery, L. Hull, G. Carneiro, "Multi-modal Learning with Missing
Modality via Shared-Specific Feature Modelling", CVPR 2023, arXiv 2307.14126.
Official code: github.com/billhhh/ShaSpec (DualNet_SS.py, train_SS.py, loss_Dual.py), commit 081fe7a.

What is built (paper section / equation):
- one shared encoder applied to each modality alone, r_i = f_sha(x_i), and one specific encoder per
  modality, s_i = f_spec^i(x_i) (§3, Eq. 1);
- residual fusion at the bottleneck only, f_i = r_i + proj([r_i; s_i]) with proj a 3x3x3 conv
  (Eq. 2; the code's CompositionalLayer);
- a missing modality's f is the mean of the available modalities' shared features (Eq. 4,
  ``fill="mean"``) or the first available one's (the code, ``fill="first"``);
- decoder input: the M fused maps concatenated; skips: the shared encoder's maps of all
  modalities concatenated, 1x1x1 conv, added after each upsampling (Eq. 3; the code's decoder);
- DAO on shared bottleneck features, weight ``alpha`` 0.1: L1 (Eq. 8, p=1, the paper's choice),
  ``kl`` (Eq. 7: KL between softmaxed low-dimensional linear projections of pooled features),
  ``mse``, or ``ce`` (Eq. 6: a modality classifier pushed towards the uniform distribution); Eq. 8 is the
  distance of one pair and the paper does not say which pairs are summed, so the pairs are the code's
  cycle over the modalities (train_SS.py, ``main``, ``term_shared``: (0,1),(1,2),(2,3),(3,0)), the
  cycle taken over whichever modalities the loss covers: (i,j),(j,i) for two, so a pair of two
  counts twice as in the code's cycle over two slots (and ``kl`` is then the symmetric KL);
- DCO on specific features, weight ``beta`` 0.02: Linear(C, M) on globally pooled specific
  features, cross-entropy against the modality index (Eq. 5);
- task loss Dice + BCE on sigmoid ET/TC/WT (loss_Dual.py), total Eq. 9.

Paper vs code, paper by default, the code as named options:
- ``fill``: "mean" (Eq. 4) | "first" (code; first in modality order, where the code's training takes
  the first of a randomly ordered list);
- ``aux_over``: "available" (§3: losses of missing modalities' features are omitted; the cycle is
  then taken over the available modalities) | "all" (code: all four slots, zeroed inputs included);
- schedule: cosine (paper, Sec. 4.2) by default; ``two_stage_poly`` (the code: run.sh trains the full-modality
  warm-up with its own poly, power 0.9, then restarts train_SS.py's poly over the whole budget at the warm-up's
  end) through the protocol's training block;
- patches: ShaSpec's pipeline (``sampler="shaspec"``, missbench/core/tasks/sampling.py: BraTSDataSet.py's
  class-centred crop with its scaling and mirroring, and my_collate's per-axis mirroring).

Backbones: ``backbone="common"`` (default) is the harness's 3-D U-Net (missbench/nets/unet3d.py)
with a width knob, small enough for a CPU, and the one every method can share (``--backbone
common``); ``backbone="official"`` is the code's 3-D ResNet-50 + ASPP encoder and decoder
(missbench/nets/resnet3d.py), 187,708,132 parameters with four modalities.

Official checkpoints (``official_state_dict``, ``backbone="official"``; the code's DualNet_SS.py
``DualNet_SS``, with Res50.py, at commit 081fe7a1e40d6bbc0736dc93e779a0a5a439d091): BraTSDataSet.py
stacks FLAIR, T1, T1ce, T2, the data set's order, and the forward reads input channel k with the k-th
specific encoder. Keys are renamed (``shared_enc``, ``flair_enc`` .. ``t2_enc`` by modality name, the
ResNet / ASPP / decoder names inside). Position matters in: the fused maps concatenated modality by
modality for the decoder's first transposed conv (``transposeconv_stage3``); the shared encoder's maps
of all modalities, concatenated likewise, for the skip projections (``shortcut_conv0`` .. ``3``); the
domain classifier's rows (``dom_classifier``, label k for the k-th modality in train_SS.py); and the
fill, the first available modality in that order (``mode_split[0]``; ``fill="first"`` takes it in the
order of ``modalities``, the same for the data set's). Those weights are reordered to the order of
``modalities`` (the identity for the data set's). The code's three outputs are ET, WT, TC
(``id2trainId``), this task's ET, TC, WT: ``cls_conv``'s rows are reordered. Its forward is this
module's with ``fill="first"`` and ``dao`` "l1" or "mse" (the others add a head it does not have).
Checked in tests/test_official_checkpoints.py at the full size against a transcription of the code's
fusion and decoder.

Deviations: the code's full-modality warm-up is 80k of 180k iterations; here it is the same
fraction (4/9) of whatever budget the protocol sets. Of the batchgenerators 0.21 transforms that
train_SS.py applies to every batch (BraTSDataSet.py ``my_collate`` / ``get_train_transform``), only the
per-axis mirroring is reproduced: the spatial transform (elastic deformation, rotation, scaling, each with
p 0.2) and the intensity transforms (noise, blur, brightness, contrast, low resolution, gamma) are not.

Classification (paper §4.1-4.2, avMNIST; the classification code is unreleased, ShaSpec issues #6,
#11): the specific encoders are SMIL's image (LeNet-5) and audio (SNetPluse) encoders, or the MLP for
tabular inputs, each followed by FC -> ReLU to ``dim`` (160, LeNet-5's feature size; the paper's
encoders have "convolutional layers and FC layers"); the shared encoder is one such encoder for every
modality, each input resized to a common grid (missbench/nets/classification.py ``SharedEncoder``:
how the paper's shared encoder reads a 28x28 image and a 20x20 MFCC map is not described); residual
fusion f_i = r_i + proj([r_i; s_i]) with proj a linear layer (Eq. 2, Fig. 1); missing modalities
filled as on segmentation (Eq. 4); decoder FC 64 -> ReLU -> dropout 0.5 -> FC classes on the M fused
vectors concatenated ("2 FC layers with dropout", SMIL's head); DAO and DCO as above on the feature
vectors. Training (§4.2): Adam lr 1e-3, weight decay 1e-2, lr x0.9 every 20 of 60 epochs (a third of
the budget). Parameters at avMNIST sizes (image 1x28x28, audio 1x20x20, 10 classes): 188,788
(specific 27,150 + 61,772, shared 27,150, proj 51,200, decoder 21,194, DCO 322); the paper reports
0.22M for a model whose layer sizes it does not give.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from missbench.core.method import Method, Output, modality_slots, permute_blocks
from missbench.nets.fusion import availability_mask, mean_over_available
from missbench.core.params import Between, OneOf
from missbench.core.regions import REGIONS
from missbench.core.training import SHASPEC_AVMNIST_TRAINING, SHASPEC_TRAINING
from missbench.nets import EncoderOutput
from missbench.nets.classification import ClassifierHead, SharedEncoder, projected_encoders
from missbench.nets.unet3d import UNetDecoder, UNetEncoder

DAO_LOSSES = ("l1", "kl", "mse", "ce")
#: The code's modality prefixes (flair_enc, ...), in the order of its input channels (BraTSDataSet.py stacks
#: FLAIR, T1, T1ce, T2), and the data set names they stand for.
OFFICIAL_MODALITIES = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1c", "t2": "T2"}
#: The code's output channels (BraTSDataSet.py ``id2trainId``).
OFFICIAL_REGIONS = ("ET", "WT", "TC")
#: Official key (``module.`` removed, encoder prefixes already ours) -> ours, applied in turn: the
#: ``U_Res3D_enc`` / ``Res50.ResNet`` and ``U_Res3D_dec`` names (decoder stages count 3..0 in the code,
#: deepest first, and 0..3 here).
OFFICIAL_RENAMES = (
    (r"^(shared|specific\.\d+)\.backbone\.conv1\.", r"\1.stem.0."),
    (r"^(shared|specific\.\d+)\.backbone\.norm1\.", r"\1.stem.1."),
    (r"^(shared|specific\.\d+)\.backbone\.(layer\d\.\d+)\.downsample\.", r"\1.\2.shortcut."),
    (r"^(shared|specific\.\d+)\.backbone\.", r"\1."),
    (r"^(shared|specific\.\d+)\.asppreduce\.", r"\1.reduce."),
    (r"^(shared|specific\.\d+)\.aspp\.branch([234])\.", lambda g: f"{g[1]}.aspp.dilated.{int(g[2]) - 2}."),
    (r"^(shared|specific\.\d+)\.aspp\.branch5_(conv|norm)\.", r"\1.aspp.global_branch.\2."),
    (r"^(shared|specific\.\d+)\.aspp\.conv_cat\.", r"\1.aspp.project."),
    (r"^shared_dec\.transposeconv_stage(\d)\.", lambda g: f"decoder.ups.{3 - int(g[1])}."),
    (r"^shared_dec\.shortcut_conv(\d)\.", lambda g: f"decoder.skip_projs.{3 - int(g[1])}."),
    (r"^shared_dec\.stage(\d)_de\.", lambda g: f"decoder.stages.{3 - int(g[1])}."),
    (r"^shared_dec\.cls_conv\.0\.", "decoder.cls_conv."),
    (r"^compos_layer\.conv\.", "proj."),
    (r"^dom_classifier\.", "dco_head."),
)


class ShaSpec(Method):
    name = "shaspec"
    citation = "Wang et al., CVPR 2023, arXiv 2307.14126; code github.com/billhhh/ShaSpec"
    outputs = {"segmentation": "regions", "classification": "labels"}
    defaults = {
        "backbone": "common",
        "width": 8,
        "depth": 3,
        "alpha": 0.1,
        "beta": 0.02,
        "dao": "l1",
        "kl_dim": 16,
        "fill": "mean",
        "aux_over": "available",
        "proj_kernel": 3,
        "dim": 160,
        "hidden": 64,
    }
    constraints = {
        "backbone": OneOf("common", "official"), "dao": OneOf(*DAO_LOSSES), "fill": OneOf("mean", "first"),
        "aux_over": OneOf("available", "all"), "alpha": Between(0), "beta": Between(0),
        **{key: Between(1, integer=True) for key in ("width", "depth", "kl_dim", "proj_kernel", "dim", "hidden")},
    }
    #: The BraTS training on segmentation, the avMNIST one on classification (paper §4.2).
    training_defaults = {"segmentation": SHASPEC_TRAINING, "classification": SHASPEC_AVMNIST_TRAINING}
    official_code = "github.com/billhhh/ShaSpec at 081fe7a1e40d6bbc0736dc93e779a0a5a439d091, DualNet_SS.py, DualNet_SS"

    def __init__(self, task, modalities: tuple[str, ...], **params: Any) -> None:
        super().__init__(task, modalities, **params)
        p = self.params
        if task.name == "classification":
            self._init_classification(task)
            return
        m, out = self.n_modalities, task.out_channels(self.output)
        if p["backbone"] == "official":
            from missbench.nets.resnet3d import ResNet3dDecoder, ResNet3dEncoder, WSConv3d

            make_encoder = ResNet3dEncoder
            self.shared = make_encoder()
            self.decoder = ResNet3dDecoder(m, out)
            conv = WSConv3d
        else:
            def make_encoder() -> nn.Module:
                return UNetEncoder(1, p["width"], p["depth"])

            self.shared = make_encoder()
            self.decoder = UNetDecoder(m, self.shared.skip_channels, self.shared.bottleneck_channels, out)
            conv = nn.Conv3d
        self.specific = nn.ModuleList(make_encoder() for _ in range(m))
        c = self.shared.bottleneck_channels
        k = p["proj_kernel"]
        self.proj = conv(2 * c, c, k, padding=k // 2, bias=False)
        self.dco_head = nn.Linear(self.specific[0].pooled_channels, m)
        if p["dao"] == "kl":
            self.dao_head = nn.Linear(self.shared.pooled_channels, p["kl_dim"])
        elif p["dao"] == "ce":
            self.dao_head = nn.Linear(self.shared.pooled_channels, m)

    def _init_classification(self, task) -> None:
        """The avMNIST model: feature vectors of ``dim`` in place of bottleneck maps, FC-dropout-FC decoder."""
        p, m, d = self.params, self.n_modalities, self.params["dim"]
        if p["backbone"] != "common":
            raise ValueError(f"shaspec: backbone={p['backbone']!r} is a segmentation network; classification has one model")
        self.shared = SharedEncoder(task.inputs, self.modalities, d)
        self.specific = projected_encoders(task.inputs, self.modalities, d)
        self.proj = nn.Linear(2 * d, d, bias=False)
        self.decoder = ClassifierHead(m * d, task.n_classes, p["hidden"], dropout=0.5)
        self.dco_head = nn.Linear(d, m)
        if p["dao"] in ("kl", "ce"):
            self.dao_head = nn.Linear(d, p["kl_dim"] if p["dao"] == "kl" else m)

    def encode(self, x: torch.Tensor | list[torch.Tensor]) -> list[tuple[EncoderOutput, EncoderOutput]]:
        """Per modality: (shared features, specific features). The shared encoder sees the M volumes as one batch.

        On classification (``x`` a list of per-modality batches) each feature is a vector, held as an
        EncoderOutput with no skips whose bottleneck and pooled feature are that vector.
        """
        if isinstance(x, list):
            def vector(v: torch.Tensor) -> EncoderOutput:
                return EncoderOutput([], v, v)

            return [(vector(self.shared(xm)), vector(spec(xm))) for xm, spec in zip(x, self.specific)]
        b, m = x.shape[:2]
        r = self.shared(x.reshape(b * m, 1, *x.shape[2:]))

        def part(t: torch.Tensor, i: int) -> torch.Tensor:
            return t.view(b, m, *t.shape[1:])[:, i]

        return [
            (EncoderOutput([part(s, i) for s in r.skips], part(r.bottleneck, i), part(r.pooled, i)), self.specific[i](x[:, i : i + 1]))
            for i in range(m)
        ]

    def decode(self, features, available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        shared = torch.stack([f[0].bottleneck for f in features], 1)  # B x M x C x ...
        specific = torch.stack([f[1].bottleneck for f in features], 1)
        b, m = shared.shape[:2]
        fused = self.proj(torch.cat([shared, specific], 2).flatten(0, 1)).view_as(shared) + shared
        if self.params["fill"] == "mean":
            fill = mean_over_available(shared, available).unsqueeze(1)
        else:
            first = available.float().argmax(1).to(shared.device)
            fill = shared[torch.arange(b, device=shared.device), first].unsqueeze(1)
        fused = torch.where(availability_mask(available, shared), fused, fill)
        if self.task.name == "classification":
            logits = self.decoder(fused.flatten(1, 2))
        else:
            skips = [torch.cat([f[0].skips[k] for f in features], 1) for k in range(len(features[0][0].skips))]
            logits = self.decoder(fused.flatten(1, 2), skips)
        out = Output(logits)
        if target is not None:
            mask = available if self.params["aux_over"] == "available" else torch.ones_like(available)
            mask = mask.to(shared.device)
            if self.params["alpha"]:
                pooled = torch.stack([f[0].pooled for f in features], 1)
                out.losses["dao"] = self.params["alpha"] * self.dao_loss(shared, pooled, mask)
            if self.params["beta"]:
                spec_pooled = torch.stack([f[1].pooled for f in features], 1)
                out.losses["dco"] = self.params["beta"] * self.dco_loss(spec_pooled, mask)
        return out

    def dao_loss(self, shared: torch.Tensor, pooled: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Domain-alignment loss on shared features, summed over cycle pairs of the kept modalities, batch-mean."""
        kind = self.params["dao"]
        if kind == "ce":
            logp = F.log_softmax(self.dao_head(pooled), -1)  # B x M x M
            per = -logp.mean(-1)  # cross-entropy against the uniform distribution
            return (per * mask).sum() / mask.sum().clamp_min(1)
        if kind == "kl":
            logp = F.log_softmax(self.dao_head(pooled), -1)
        total = shared.new_zeros(())
        for b in range(shared.shape[0]):
            idx = mask[b].nonzero().flatten().tolist()
            pairs = list(zip(idx, idx[1:] + idx[:1])) if len(idx) > 1 else []
            for i, j in pairs:
                if kind == "l1":
                    total = total + (shared[b, i] - shared[b, j]).abs().mean()
                elif kind == "mse":
                    total = total + (shared[b, i] - shared[b, j]).pow(2).mean()
                else:
                    total = total + F.kl_div(logp[b, j], logp[b, i], log_target=True, reduction="sum")
        return total / shared.shape[0]

    def dco_loss(self, spec_pooled: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Domain-classification loss: predict each kept modality's index from its pooled specific feature."""
        b, m = spec_pooled.shape[:2]
        logits = self.dco_head(spec_pooled).flatten(0, 1)
        labels = torch.arange(m, device=logits.device).repeat(b)
        ce = F.cross_entropy(logits, labels, reduction="none").view(b, m)
        return (ce * mask).sum() / mask.sum().clamp_min(1)

    def feature_views(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Globally pooled shared and specific features, B x M x C each, of every modality of ``x``.

        The runner saves them per test case (features.npz) for the paper's shared/specific feature
        visualisation (t-SNE in the paper; no code released), which missbench/report/figures.py draws.
        """
        feats = self.encode(x)
        return {"shared": torch.stack([f[0].pooled for f in feats], 1), "specific": torch.stack([f[1].pooled for f in feats], 1)}

    def official_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The code's ``DualNet_SS`` state dict (``torch.load(ckpt)['model'].state_dict()``; train_SS.py saves the
        whole module) as this module's, ``backbone="official"``.

        Keys renamed (``shared_enc``, ``flair_enc`` .. ``t2_enc`` by modality name, ``OFFICIAL_RENAMES``
        inside), and the weights that read or write the modalities by position, in the code's order FLAIR,
        T1, T1c, T2 (the data set's, so a no-op there), reordered to this module's: the decoder's first
        transposed conv (``transposeconv_stage3``, which reads the fused maps concatenated modality by
        modality), its skip projections (``shortcut_conv0``..``3``, the shared maps likewise) and the domain
        classifier's rows (``dom_classifier``, one per modality). The code's output channels are ET, WT, TC:
        ``cls_conv``'s rows are reordered to this task's ET, TC, WT. The code fills a missing modality with
        the first available one's shared feature: its forward is this module's with ``fill="first"``.
        """
        if self.task.name != "segmentation" or self.params["backbone"] != "official":
            raise ValueError("shaspec: official checkpoints are of the segmentation model with backbone='official'")
        if hasattr(self, "dao_head"):
            raise ValueError(f"shaspec: the official model has no head for dao={self.params['dao']!r}: build with dao='l1' or 'mse'")
        slots = modality_slots(self.name, self.modalities, tuple(OFFICIAL_MODALITIES.values()))
        index = dict(zip(OFFICIAL_MODALITIES, slots))
        order = [slots.index(i) for i in range(self.n_modalities)]  # our modality i is the code's order[i]
        names = "|".join(OFFICIAL_MODALITIES)
        out = {}
        for key, value in state.items():
            key = re.sub(r"^shared_enc\.", "shared.", key.removeprefix("module."))
            key = re.sub(rf"^({names})_enc\.", lambda g: f"specific.{index[g[1]]}.", key)
            for pattern, replace in OFFICIAL_RENAMES:
                key = re.sub(pattern, replace, key)
            if key == "decoder.ups.0.weight":  # ConvTranspose3d: input channels first
                value = permute_blocks(value, 0, order)
            elif re.fullmatch(r"decoder\.skip_projs\.\d\.0\.weight", key):
                value = permute_blocks(value, 1, order)
            elif key in ("dco_head.weight", "dco_head.bias"):
                value = permute_blocks(value, 0, order)
            elif key == "decoder.cls_conv.weight":
                value = permute_blocks(value, 0, [OFFICIAL_REGIONS.index(r) for r in REGIONS])
            out[key] = value
        return out
