"""ul4m4: UL4M4, task-independent imputation of missing modalities in embedding space, then a task head.

Paper: H. Ismkhan, H. Bouchachia, "Unsupervised Learning for Missing Modalities in Multimodal
Learning", arXiv 2606.15743 (2026). Code (no licence file): github.com/h-ismkhan/Multimodal-Learning-
with-Missing-Modalities-via-Unsupervised-Learning at 0f84e8f, ``MM-IMDb/mmimdb_ul4m4.py`` (the defaults
here) and ``CMU-MOSI/mosi-ul4m4.py`` (k-means++ under the partial distance).
The imputer (normalisation, partial-modality distance, partial k-means, greedy completion,
de-normalisation) is missbench/nets/imputation.py; it has no trainable parameters.

The paper imputes embeddings of *frozen* encoders (CLIP, BERT, WavLM; on Sleep-EDF small autoencoders
pre-trained first). No hub downloads here, so the method trains its encoders itself, in two stages
(``stage_steps``/``fit_stage``; boundary at ``stage_fraction`` of the budget, 0.5 by default):

Classification (what is built):
- stage 1: one encoder per modality (missbench/nets/classification.py: SMIL's LeNet image encoder,
  its MFCC audio encoder, an MLP for tables), each with its own linear classifier trained on the
  modality alone, cross-entropy averaged over the available (sample, modality) slots (loss
  ``unimodal``). Encoders trained independently of each other, as the paper's pre-trained ones are;
- boundary: encoders frozen (eval mode, no gradient), the training split embedded, the imputer fit
  (statistics and centres in buffers, so a checkpoint carries them);
- stage 2: the MM-IMDb script's ``TaskNet`` trained from scratch on completed embeddings: per-modality
  Linear(d_m, 256), two layers of 4-head self-attention over the modality tokens with residual +
  LayerNorm, mean over modalities, ReLU(Linear(256, 256)), then Linear 256->128, dropout 0.1, ReLU,
  Linear 128->64, ReLU, dropout 0.1, Linear 64->classes; cross-entropy (the MM-IMDb script's BCE is
  for its multi-label genres). 898,455 parameters at MM-IMDb's sizes (CLIP 512 + 512, 23 genres),
  the notes' "about 0.9M", asserted in tests/test_ul4m4.py. At avMNIST sizes (image 1x28x28, audio
  1x20x20, 10 classes): 774,968 parameters, 758,346 of them (the head) trained after the boundary.

Segmentation (an adaptation; the paper has no segmentation):
- the harness's U-Net (missbench/nets/unet3d.py): one encoder per modality and one decoder fed the M
  modalities' maps per scale concatenated (the layout of ``mean_fill``);
- stage 1: encoders and decoder trained with every missing modality's maps (bottleneck and skips) set
  to the mean of the available modalities' (``mean_fill``'s rule);
- boundary: encoders frozen; the imputer is fit on the bottleneck of the trainer's fixed training
  patches, **per voxel**: each bottleneck voxel's C-vector of each modality is one embedding, a
  (patch, voxel) one sample. Per voxel rather than pooled because the decoder needs a map (a pooled
  vector carries no layout to put back), and rather than the whole flattened map because that ties
  the imputer to one window size and gives one sample per patch (32 samples for 64 centres), while
  per voxel gives 64 per 32³ patch at depth 3 and conditions each filled vector on what the available
  modalities show at that place;
- stage 2: the decoder (kept, not re-initialised: it also reads the skips) is trained further on the
  completed bottleneck; a missing modality's **skips** stay filled with the mean of the available
  modalities' skips at each scale (imputing full-resolution maps per voxel would cluster millions of
  vectors per fit). Output: sigmoid ET/TC/WT with Dice + BCE, as ``mean_fill``.

Defaults and where the paper is silent:
- k = 64 and at most 50 k-means iterations (the MM-IMDb script's ``--k``/``--kmeans-iters``; the MOSI
  script uses k = 10 or 70 and 100). k-means++ under the partial distance (MOSI; MM-IMDb seeds with
  sklearn on a crude concatenation). k is capped at the number of training samples.
- stage split (0.5) and the stage-1 objective (per-modality classifiers): the paper's encoders come
  pre-trained, so it says nothing of either.
- training on classification: Adam lr 1e-3, constant, batch from the protocol, no extra modality
  dropping (the slots the data set's protocol leaves missing are the missingness). The paper's Adam
  5e-5 (MM-IMDb; 5e-4 MOSI) trains only a head on CLIP features; here stage 1 trains encoders from
  scratch, at the rate SMIL and ShaSpec use on avMNIST. Segmentation: ``mean_fill``'s (ShaSpec's)
  training, so the two differ only in how the bottleneck is filled. The paper's best-on-validation
  checkpoint is the harness's model selection.
- before the boundary the classification logits are zeros (uniform): the unimodal classifiers only
  train the encoders, and validation-based model selection must not return a stage-1 model as UL4M4's.
- the imputer's k-means runs once, at the boundary, on the training embeddings with their training
  availability; its seed is drawn from the run's seeded generator when the method is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from missbench.nets.imputation import EmbeddingImputer
from missbench.core.method import Method, Output
from missbench.nets.fusion import fill_missing_with_mean
from missbench.core.params import Between
from missbench.core.training import SHASPEC_TRAINING, TrainingDefaults
from missbench.nets import EncoderOutput
from missbench.nets.classification import encoders_for
from missbench.nets.unet3d import UNetDecoder, UNetEncoder

#: Classification training (see the module docstring): Adam 1e-3, constant, no extra modality dropping.
CLASSIFICATION_TRAINING = TrainingDefaults(optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant", dropout="full")


class TaskNet(nn.Module):
    """The MM-IMDb script's task head: modality tokens, self-attention fusion, MLP classifier."""

    def __init__(self, dims: list[int], n_classes: int, width: int = 256, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.projections = nn.ModuleList(nn.Linear(d, width) for d in dims)
        self.attention = nn.ModuleList(nn.MultiheadAttention(width, heads, batch_first=True) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))
        self.output = nn.Linear(width, width)
        self.classifier = nn.Sequential(
            nn.Linear(width, 128), nn.Dropout(0.1), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, n_classes)
        )

    def forward(self, z: list[torch.Tensor]) -> torch.Tensor:
        tokens = torch.stack([proj(zm) for proj, zm in zip(self.projections, z)], 1)
        for attn, norm in zip(self.attention, self.norms):
            tokens = norm(tokens + attn(tokens, tokens, tokens, need_weights=False)[0])
        return self.classifier(torch.relu(self.output(tokens.mean(1))))


class UL4M4(Method):
    name = "ul4m4"
    citation = ("Ismkhan and Bouchachia, arXiv 2606.15743 (UL4M4); "
                "code github.com/h-ismkhan/Multimodal-Learning-with-Missing-Modalities-via-Unsupervised-Learning")
    outputs = {"segmentation": "regions", "classification": "labels"}
    own_task_loss = True  # before its imputer is fitted, classification trains each modality on its own
    defaults = {"k": 64, "iterations": 50, "stage_fraction": 0.5, "head_width": 256, "heads": 4, "layers": 2, "width": 8, "depth": 3}
    constraints = {"stage_fraction": Between(0, 1, low_open=True, high_open=True),
                   **{key: Between(1, integer=True) for key in ("k", "iterations", "head_width", "heads", "layers", "width", "depth")}}
    training_defaults = {"segmentation": SHASPEC_TRAINING, "classification": CLASSIFICATION_TRAINING}

    def __init__(self, task, modalities: tuple[str, ...], **params: Any) -> None:
        super().__init__(task, modalities, **params)
        p = self.params
        self.segmentation = task.name == "segmentation"
        if self.segmentation:
            self.encoders = nn.ModuleList(UNetEncoder(1, p["width"], p["depth"]) for _ in modalities)
            enc = self.encoders[0]
            self.decoder = UNetDecoder(self.n_modalities, enc.skip_channels, enc.bottleneck_channels, task.out_channels(self.output))
            dims = [enc.bottleneck_channels] * self.n_modalities
        else:
            n_classes = task.out_channels(self.output)
            self.encoders = encoders_for(task.inputs, self.modalities)
            dims = [enc.out_features for enc in self.encoders]
            self.unimodal = nn.ModuleList(nn.Linear(d, n_classes) for d in dims)
            self.head = TaskNet(dims, n_classes, p["head_width"], p["heads"], p["layers"])
        self.imputer = EmbeddingImputer(dims, int(p["k"]), int(p["iterations"]))
        # Drawn after the weights, from the run's seeded generator: the k-means seed is the run's.
        self.kmeans_seed = int(torch.randint(0, 2**31 - 1, (), device="cpu"))

    @property
    def fitted(self) -> bool:
        """Whether the stage boundary has passed (the imputer is fit and the encoders are frozen)."""
        return bool(self.imputer.fitted)

    def frozen_parts(self) -> list[nn.Module]:
        """What stage 2 no longer trains: the encoders (and, on classification, their unimodal classifiers)."""
        return [self.encoders] if self.segmentation else [self.encoders, self.unimodal]

    def train(self, mode: bool = True) -> "UL4M4":
        """As nn.Module's, except that frozen encoders stay in eval mode (dropout off, BatchNorm statistics fixed),
        so stage 2 sees the embeddings the imputer was fit on."""
        super().train(mode)
        if self.fitted:
            for part in self.frozen_parts():
                part.eval()
        return self

    def stage_steps(self, total: int) -> list[int]:
        """One boundary, at ``stage_fraction`` of the budget, leaving each stage at least one iteration when it can."""
        return [max(0, min(total - 1, max(1, round(self.params["stage_fraction"] * total))))]

    def encode(self, x: Any) -> list[Any]:
        """Per modality: its encoder's output (frozen, without a graph, after the boundary)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.fitted):
            if self.segmentation:
                return [enc(x[:, i : i + 1]) for i, enc in enumerate(self.encoders)]
            return [enc(x[i]) for i, enc in enumerate(self.encoders)]

    @torch.no_grad()
    def fit_stage(self, index: int, batches: Callable[[], Iterator[tuple[Any, torch.Tensor, torch.Tensor]]]) -> None:
        """Embed the training data with the stage-1 encoders and fit the imputer; the encoders are frozen from here."""
        z: list[list[torch.Tensor]] = [[] for _ in self.modalities]
        present = []
        for x, available, _ in batches():
            feats = self.encode(x)
            vectors = [self._bottleneck_vectors(f.bottleneck) for f in feats] if self.segmentation else feats
            for m, v in enumerate(vectors):
                z[m].append(v)
            per_sample = vectors[0].shape[0] // available.shape[0]
            present.append(available.to(vectors[0].device).repeat_interleave(per_sample, 0))
        self.imputer.fit([torch.cat(zm) for zm in z], torch.cat(present), self.kmeans_seed)
        for part in self.frozen_parts():
            part.requires_grad_(False)
            part.eval()

    @staticmethod
    def _bottleneck_vectors(bottleneck: torch.Tensor) -> torch.Tensor:
        """B x C x h x w x d -> (B·h·w·d) x C: one embedding per (patch, bottleneck voxel)."""
        return bottleneck.flatten(2).transpose(1, 2).flatten(0, 1)

    def _impute_bottleneck(self, maps: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """B x M x C x ... bottleneck maps with each missing modality's filled voxel by voxel by the imputer."""
        b, m, c = maps.shape[:3]
        spatial = maps.shape[3:]
        vectors = [self._bottleneck_vectors(maps[:, i]) for i in range(m)]
        voxels = vectors[0].shape[0] // b
        filled = self.imputer(vectors, available.repeat_interleave(voxels, 0))
        return torch.stack([f.view(b, *spatial, c).movedim(-1, 1) for f in filled], 1)

    def decode(self, features: list[Any], available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        available = available.to(self.imputer.fitted.device)
        logits = self._decode_segmentation(features, available) if self.segmentation else self._decode_classification(features, available)
        out = Output(logits)
        if target is not None:
            if self.segmentation or self.fitted:
                out.losses.update(self.task_loss(logits, target))
            else:
                out.losses["unimodal"] = self._unimodal_loss(features, available, target)
        return out

    def _decode_segmentation(self, features: list[EncoderOutput], available: torch.Tensor) -> torch.Tensor:
        bottleneck = torch.stack([f.bottleneck for f in features], 1)
        bottleneck = self._impute_bottleneck(bottleneck, available) if self.fitted else fill_missing_with_mean(bottleneck, available)
        skips = [fill_missing_with_mean(torch.stack([f.skips[k] for f in features], 1), available).flatten(1, 2)
                 for k in range(len(features[0].skips))]
        return self.decoder(bottleneck.flatten(1, 2), skips)

    def _decode_classification(self, features: list[torch.Tensor], available: torch.Tensor) -> torch.Tensor:
        """The head on completed embeddings; before the boundary, uniform (zero) logits: there is no UL4M4
        model yet, and validation-based model selection must not pick the stage-1 encoders' classifiers."""
        if self.fitted:
            return self.head(self.imputer(features, available))
        return features[0].new_zeros(features[0].shape[0], self.head.classifier[-1].out_features)

    def _unimodal_loss(self, features: list[torch.Tensor], available: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Stage 1: each modality's classifier's cross-entropy, averaged over the available (sample, modality) slots."""
        ce = torch.stack([nn.functional.cross_entropy(head(f), target, reduction="none") for head, f in zip(self.unimodal, features)], 1)
        return torch.where(available, ce, 0).sum() / available.sum().clamp_min(1)
