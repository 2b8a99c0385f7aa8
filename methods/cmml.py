"""cmml: a RECONSTRUCTION of CMML (context-driven missing-modality learning) from the paper's description.

Paper: T. Liu, L. Yu, T. Han, L. Wan, "Context-driven Missing-Modality Learning for Robust Medical
Diagnosis with Image-Tabular Data", arXiv 2605.25968v1 (2026). No public code was found (searched by title,
acronym and first author); only the abstract was read, so every size, loss weight and training setting below
is this harness's choice, named as such. Results of this method are of this reconstruction, not of the
authors' model.

What the paper describes, and how it is built here (classification only):
1. per-modality encoders (missbench/nets/classification.py: SMIL's LeNet image and MFCC audio
   encoders, an MLP for tables), each followed by a linear projection to a common ``width``;
2. **Cascade Residual Transformer-based Autoencoder (CRTA)**: ``context`` learnable context tokens
   (the dataset-level semantic prior) and one token per modality (its projected feature plus a
   modality embedding; a missing modality's is a learned mask token plus its modality embedding) go
   through ``blocks`` residual blocks, each pre-LN self-attention then a bottleneck autoencoder MLP
   (width -> width/2 -> width), both residual. The output at a missing modality's position is its
   synthesised representation;
3. **modality-specific memory banks**: per modality, class prototypes of its real projected features
   (buffers, updated in training by an exponential moving average, ``momentum``, over the batch's
   available samples of each class). A synthesised representation attends over its modality's
   prototypes (softmax of scaled dot products) and the retrieved prototype mixture is added to it.
   Labels are used only to update the banks, never to read them;
4. **instance-adaptive semantic reference**: the context tokens attend (cross-attention, residual,
   LayerNorm) to the CRTA's outputs at the modality positions, which turns the dataset-level prior
   into per-sample reference tokens. Every modality's representation (real where available,
   enriched synthesised where missing) attends to these references (residual): the alignment into
   a unified space. An alignment loss pulls each aligned representation towards the mean reference
   (1 - cosine similarity), reducing the real-versus-synthesised gap;
5. **class-aware contrastive refinement**: a supervised contrastive loss (Khosla et al., NeurIPS
   2020, Eq. 2) on a linear projection of the fused representation (the mean of the aligned
   modality representations), temperature ``temperature``;
6. a classifier (FC-ReLU-dropout-FC, missbench/nets/classification.py ``ClassifierHead``) on the
   fused representation; cross-entropy.

Training order (a deviation): the abstract says CMML "sequentially performs modality synthesis and semantic
alignment"; here every term (synthesis, alignment, contrastive, cross-entropy) is one loss, trained jointly
from the first iteration. If the paper trains synthesis first and alignment after (a schedule the abstract
does not give), that is not reproduced.

Synthesis is trained the only way the harness allows (a missing modality's input is never seen): in
training, a second CRTA pass hides one more, randomly chosen, available modality of every sample that
has at least two, and the enriched synthesised representation is regressed onto that modality's real
projected feature (MSE, target detached so the encoders cannot collapse to make it easy). The draw
uses a generator seeded by the method's seed and the trainer's iteration, so a resumed run draws the
same.

Loss weights (parameters), and why these defaults: ``rec_weight`` 1.0, the synthesis objective is
CMML's first stage and on the scale of the cross-entropy; ``align_weight`` 0.1 and ``con_weight``
0.1, auxiliary regularisers kept an order of magnitude below the task loss, as ShaSpec's DAO (0.1)
and U-HVED's KL (0.1) are; ``temperature`` 0.07, the supervised contrastive paper's default.
Sizes: ``width`` 64, 4 heads, 4 context tokens, 2 blocks (the smallest cascade), ``momentum`` 0.9.
Training: Adam lr 1e-3, constant, random modality dropping uniform over the non-empty subsets
(``uniform_subset``) where the protocol does not fix availability, so the classifier meets
synthesised representations even on complete data; the paper's optimiser and schedule are unknown.

Parameters at avMNIST sizes (image 1x28x28, audio 1x20x20, 10 classes) with the defaults: 127,780,
asserted in tests/test_cmml.py.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from missbench.core.method import Method, Output
from missbench.core.params import Between
from missbench.core.training import TrainingDefaults
from missbench.nets.classification import ClassifierHead, encoders_for

#: Adam 1e-3, constant, uniform-subset dropping (see the module docstring: the paper's are unknown).
CMML_TRAINING = TrainingDefaults(optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant", dropout="uniform_subset")


class CRTABlock(nn.Module):
    """One residual Transformer autoencoder block: pre-LN self-attention, then a bottleneck MLP, both residual."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.autoencoder = nn.Sequential(nn.Linear(width, width // 2), nn.GELU(), nn.Linear(width // 2, width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.norm1(tokens)
        tokens = tokens + self.attention(h, h, h, need_weights=False)[0]
        return tokens + self.autoencoder(self.norm2(tokens))


def supervised_contrastive(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Khosla et al.'s SupCon (L_out): for each anchor with a same-class partner, minus the mean log-probability
    of its positives among all other samples; averaged over those anchors (0 if there are none)."""
    z = F.normalize(z, dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, 1, keepdim=True)
    positives = (labels[:, None] == labels[None]) & ~self_mask
    count = positives.sum(1)
    anchors = count > 0
    if not anchors.any():
        return z.sum() * 0
    per_anchor = torch.where(positives, log_prob, 0).sum(1) / count.clamp_min(1)
    return -per_anchor[anchors].mean()


class CMML(Method):
    name = "cmml"
    citation = "Liu et al., arXiv 2605.25968 (CMML); reconstruction from the paper's description, no public code"
    outputs = {"classification": "labels"}
    defaults = {
        "width": 64,
        "heads": 4,
        "context": 4,
        "blocks": 2,
        "momentum": 0.9,
        "temperature": 0.07,
        "rec_weight": 1.0,
        "align_weight": 0.1,
        "con_weight": 0.1,
        "hidden": 64,
    }
    constraints = {
        **{key: Between(1, integer=True) for key in ("width", "heads", "context", "blocks", "hidden")},
        "momentum": Between(0, 1, high_open=True), "temperature": Between(0, low_open=True),
        "rec_weight": Between(0), "align_weight": Between(0), "con_weight": Between(0),
    }
    training_defaults = {"classification": CMML_TRAINING}

    def __init__(self, task, modalities: tuple[str, ...], **params: Any) -> None:
        super().__init__(task, modalities, **params)
        p = self.params
        width, m, n_classes = p["width"], self.n_modalities, task.out_channels(self.output)
        if width % p["heads"] or width % 2:
            raise ValueError(f"cmml: parameter width={width!r} must be even and divisible by heads={p['heads']!r}")
        self.encoders = encoders_for(task.inputs, self.modalities)
        self.projections = nn.ModuleList(nn.Linear(enc.out_features, width) for enc in self.encoders)
        self.modality_embedding = nn.Parameter(torch.randn(m, width) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(width))
        self.context = nn.Parameter(torch.randn(p["context"], width) * 0.02)
        self.crta = nn.ModuleList(CRTABlock(width, p["heads"]) for _ in range(p["blocks"]))
        self.reference_attention = nn.MultiheadAttention(width, p["heads"], batch_first=True)
        self.reference_norm = nn.LayerNorm(width)
        self.align_attention = nn.MultiheadAttention(width, p["heads"], batch_first=True)
        self.align_norm = nn.LayerNorm(width)
        self.contrastive_projection = nn.Linear(width, width)
        self.classifier = ClassifierHead(width, n_classes, p["hidden"])
        self.register_buffer("prototypes", torch.zeros(m, n_classes, width))
        self.register_buffer("bank_ready", torch.zeros(m, n_classes, dtype=torch.bool))
        # Drawn after the weights, from the run's seeded generator: the pseudo-missing draws are the run's.
        self.noise_seed = int(torch.randint(0, 2**31 - 1, (), device="cpu"))

    def encode(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per modality: its encoder's feature projected to the common width (B x width)."""
        return [proj(enc(xm)) for enc, proj, xm in zip(self.encoders, self.projections, x)]

    def synthesise(self, real: torch.Tensor, available: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CRTA over [context; modality tokens]; returns the modality outputs (B x M x width) and each
        modality's representation: real where available, memory-enriched synthesised where missing."""
        b, m, _ = real.shape
        tokens = torch.where(available[..., None], real, self.mask_token) + self.modality_embedding
        tokens = torch.cat([self.context.expand(b, -1, -1), tokens], 1)
        for block in self.crta:
            tokens = block(tokens)
        out = tokens[:, -m:]
        return out, torch.where(available[..., None], real, out + self.retrieve(out))

    def retrieve(self, queries: torch.Tensor) -> torch.Tensor:
        """B x M x width: each modality's query attends over that modality's filled class prototypes."""
        scores = torch.einsum("bmd,mcd->bmc", queries, self.prototypes) / queries.shape[-1] ** 0.5
        weights = torch.softmax(scores.masked_fill(~self.bank_ready, float("-inf")), -1)
        weights = torch.where(self.bank_ready.any(-1)[None, :, None], weights, 0)  # an empty bank adds nothing
        return torch.einsum("bmc,mcd->bmd", weights, self.prototypes)

    @torch.no_grad()
    def update_banks(self, real: torch.Tensor, available: torch.Tensor, target: torch.Tensor) -> None:
        """EMA of each modality's class prototypes over the batch's available samples of that class."""
        onehot = F.one_hot(target, self.prototypes.shape[1]).to(real.dtype)  # B x C
        weights = onehot[:, None, :] * available[..., None].to(real.dtype)  # B x M x C
        count = weights.sum(0)  # M x C
        means = torch.einsum("bmc,bmd->mcd", weights, torch.where(available[..., None], real, 0)) / count.clamp_min(1)[..., None]
        seen = count > 0
        mom = self.params["momentum"]
        blended = torch.where(self.bank_ready[..., None], mom * self.prototypes + (1 - mom) * means, means)
        # New tensors, not in-place updates: this step's graph still holds the old prototypes.
        self.prototypes = torch.where(seen[..., None], blended, self.prototypes)
        self.bank_ready = self.bank_ready | seen

    def align(self, reps: torch.Tensor, crta_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Instance-adaptive references from the context tokens and the CRTA outputs; the modality
        representations aligned by attending to them. Returns (aligned B x M x width, mean reference B x width)."""
        context = self.context.expand(reps.shape[0], -1, -1)
        reference = self.reference_norm(context + self.reference_attention(context, crta_out, crta_out, need_weights=False)[0])
        aligned = self.align_norm(reps + self.align_attention(reps, reference, reference, need_weights=False)[0])
        return aligned, reference.mean(1)

    def decode(self, features: list[torch.Tensor], available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        real = torch.stack(features, 1)
        available = available.to(real.device)
        crta_out, reps = self.synthesise(real, available)
        aligned, reference = self.align(reps, crta_out)
        fused = aligned.mean(1)
        out = Output(self.classifier(fused))
        if target is None:
            return out
        p = self.params
        if p["rec_weight"]:
            out.losses["rec"] = p["rec_weight"] * self.synthesis_loss(real, available)
        if p["align_weight"]:
            out.losses["align"] = p["align_weight"] * (1 - F.cosine_similarity(aligned, reference[:, None], dim=-1)).mean()
        if p["con_weight"]:
            out.losses["con"] = p["con_weight"] * supervised_contrastive(self.contrastive_projection(fused), target, p["temperature"])
        if self.training:
            self.update_banks(real, available, target)
        return out

    def synthesis_loss(self, real: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """Hide one more available modality of each sample that has two or more; MSE of its enriched synthesis
        against its real (detached) feature, averaged over the hidden slots (0 if none)."""
        gen = torch.Generator(device=real.device).manual_seed(self.noise_seed * 1_000_003 + self.step)
        scores = torch.rand(available.shape, generator=gen, device=real.device).masked_fill(~available, -1)
        hidden = F.one_hot(scores.argmax(1), available.shape[1]).bool() & (available.sum(1, keepdim=True) > 1)
        if not hidden.any():
            return real.sum() * 0
        _, reps = self.synthesise(real, available & ~hidden)
        err = (reps - real.detach()).pow(2).mean(-1)
        return err[hidden].mean()
