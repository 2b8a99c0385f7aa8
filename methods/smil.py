"""SMIL: multimodal learning with severely missing modality by Bayesian meta-learning.

Paper: M. Ma, J. Ren, L. Zhao, S. Tulyakov, C. Wu, X. Peng, "SMIL: Multimodal Learning with Severely
Missing Modality", AAAI 2021, arXiv 2103.05677. Official code: github.com/mengmenm/SMIL at 0d0e827
(2022-06-18, the head; no licence): src/models/soundlenet5.py ``SoundLenet5New`` (the fusion model),
src/models/newencoder.py ``InferNetNew`` (reconstruction and regularisation heads), both since
31a0eae; src/get_sound_mean_kmean.py (the modality priors, added in 75f70dd) and
src/train_missing_eval_missing.py (the meta-learning loop, added in 0d0e827). Its functional passes
are MetaNN 0.2.5's (requirements.txt) ``ProtoModule.functional`` (github.com/yhqjohn/MetaNN 1fcc64e,
metann/proto.py).

What is built (classification, the code's avMNIST model):
- encoders: SMIL's LeNet-5 image encoder (160-d) and ``SNetPluse`` audio encoder (320-d), or the MLP
  for tabular inputs (missbench/nets/classification.py); fusion head concat -> FC 64 -> ReLU ->
  dropout 0.5 -> FC classes (``SoundLenet5New``);
- missing-modality reconstruction: modality m's feature is sum_k w_k c_k / sum_k w_k over K = 10
  priors c_k, the k-means centroids of m's training features (get_sound_mean_kmean.py, K 10), with
  w = softplus(fc0(z_j)) from an available modality's feature (``InferNetNew.fc0``, 160 -> 10);
- regularisation (feature perturbation) on modality-incomplete samples: the fused feature gets
  softplus(fc1(z_j) + eps) added (``fc1``, 160 -> 480), the 64-d hidden layer softplus(fc2(fused) +
  eps) (``fc2``, 480 -> 64), eps ~ N(0, I) in training and eps = 0 at evaluation (``meta_train``
  False); a complete sample is neither reconstructed nor perturbed (the code's ``mode='two'``);
- meta-learning inside ``forward`` (train_missing_eval_missing.py ``meta_training``): one inner SGD
  step on the batch's modality-incomplete samples (CE of the noisy forward) on the encoders and head
  only, not the reconstruction/regularisation heads; with the adapted weights, an outer loss on the
  batch's complete samples with a missing pattern simulated: CE of the reconstructed, perturbed
  (eps = 0) prediction + 0.01 MSE(fused feature, the real one) + 0.01 MSE(hidden layer, the real one)
  (``KDLossAlignTwo(alpha=0.01, beta=0.01)``); total = inner CE + outer loss, second-order gradients
  through the inner step (``create_graph``; here torch.func.functional_call); inner rate 1e-3 x 0.1
  every eighth of the meta stage (the code's 0.1 every 1,000 of 8,000 iterations).

The code's pipeline is four scripts: image and audio classifiers pre-trained (train_mnist.py,
train_sound.py), the fusion model trained on the paired samples (train_soundmnist.py), k-means of the
paired audio features in eval mode (get_sound_mean_kmean.py), then meta-training. Here it is one run
in two stages: up to ``pretrain_fraction`` of the budget, CE of the fusion head on complete samples
plus CE of a small head per modality (FC 32 -> classes, LeNet-5's own 160 -> 32 -> 10) on every
sample that has it, the uni-modal pre-training; at the stage (``fit_stage``, in eval mode), k-means of
each modality's features over the training samples that have it, stored in buffers; then
meta-learning.

Meta-learning trains every parameter, encoders included (``freeze="none"``, the default):
``meta_training`` sets ``requires_grad=True`` on every parameter of the fusion model, undoing
``SoundLenet5New(extractor_grad=False)``, and its Adam covers them all, so the audio encoder learns
from the outer feature MSEs through the clean pass (the inner step skips the sound branch, its
parameters 8 to 25, which the inner CE does not reach: the same here, where a missing modality's
encoder gets no inner gradient). The paper's modified MAML framework holds the main network f_theta
as one, with the reconstruction and regularisation networks f_phi_c, f_phi_r (§"Proposed method");
it singles out no encoder to freeze. ``freeze="missing"`` (the encoders of modalities missing in
some training sample or batch so far) or ``"all"`` freeze encoders at the stage instead, what
``extractor_grad=False`` intended, so the priors stay in the encoders' feature space.

The meta passes run in train mode (batch statistics; dropout 0.5 in LeNet-5 and the head, 0.25 in
``SNetPluse``), frozen encoders included: ``ProtoModule.functional(params, True)`` sets train mode on
the copy it runs, whatever the evaluations' ``eval()`` left. That copy (``stateless``, a deepcopy)
holds its own batch-norm running statistics, so the meta passes never change the ones the code
evaluates with; here likewise they run on a copy of the buffers, and the running statistics stay
those of the stage.

Generalised to any number of modalities and any missing pattern (the code handles two modalities,
audio missing): one weight head fc0 per (missing m, available j) pair and one fc1 per available j;
with several available modalities their head outputs are averaged. The complete samples of the
outer loss take the missing patterns of the batch's incomplete samples in turn. A batch with no
incomplete sample trains the clean fusion model (CE on complete samples, as train_soundmnist.py); a
batch with no complete sample has the inner CE only.

Parameters at avMNIST sizes (image 1x28x28, audio 1x20x20, 10 classes, K 10): 326,284 trainable
before the stage (encoders 11,802; fusion head 31,434; uni-modal heads 16,084; fc0 1,610 + 3,210;
fc1 77,280 + 154,080; fc2 30,784), all trained in meta-learning too; 315,872 once the stage has
frozen the audio encoder (10,412) under ``freeze="missing"``.
SMIL's reported 0.325M (ShaSpec §4.5; 324,688 counted from the code) holds the same encoders, fusion
head, fc0, fc1 and fc2 plus heads the avMNIST run never uses (LeNet-5's and SNetPluse's classifiers,
InferNetNew's conv1/conv2/fc11/fc21); the image-missing direction (fc0 320 -> 10, fc1 320 -> 480) is
new here, because the harness may drop either modality.

The reconstruction weights carry no noise (the code's fc0 returns its mean in both modes);
``weight_noise=True`` draws eps for them in training as for the perturbations, a Bayesian reading of
the paper's weights that the code does not implement.

Segmentation (an adaptation; SMIL has no segmentation model): per-modality encoders of the harness's
common 3-D U-Net (missbench/nets/unet3d.py, as mean_fill), fused at the bottleneck. There the
reconstruction works per voxel: the priors are k-means centroids of a modality's bottleneck voxel
features (C-d) over the trainer's fixed set of training patches, the weights a per-voxel linear map
(1x1x1) of an available modality's bottleneck; the fused-feature perturbation is per voxel too. The
hidden-layer perturbation has no single counterpart in a U-Net decoder and is left out (so is its
MSE term). A missing modality's skips are the mean of the available modalities' skips (mean_fill).
The stage defaults to ShaSpec's full-modality warm-up (4/9 of the budget), with ShaSpec's training
defaults as zero_fill and mean_fill, so only the mechanism differs; the encoders train on through
meta-learning as on classification (the U-Net's instance norm has no running statistics).

Deviations: the code selects its checkpoint on test accuracy (not reproduced: the harness selects on
the validation split); each code iteration draws two batches of the batch size, image-only samples
for the inner step and paired ones for the outer loss, where here one batch of the protocol's draw
splits into its incomplete and complete samples; its StepLR of 5,000 of 8,000 meta iterations is
here x0.1 at 5/8 of the meta stage (0.3 + 0.7 x 5/8 of the budget), for the pre-training and the
meta stage alike; the code's pre-training is 60 epochs of the paired set (after uni-modal
pre-training), here 30% of the one budget. Before the stage every encoder reads the whole batch,
zeroed missing inputs included, so ``SNetPluse``'s batch statistics, and the running statistics that
the priors and evaluation use, mix zeroed and real audio; the code pre-trains the audio encoder on
audio samples only (train_sound.py, then train_soundmnist.py on the paired set).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from missbench.nets.imputation import partial_kmeans
from missbench.core.method import Method, Output
from missbench.nets.fusion import fill_missing_with_mean
from missbench.core.params import Between, OneOf
from missbench.core.training import SHASPEC_TRAINING, TrainingDefaults
from missbench.nets import EncoderOutput
from missbench.nets.classification import ClassifierHead, encoders_for
from missbench.nets.unet3d import UNetDecoder, UNetEncoder

#: Share of the budget before the stage on classification (the code's pre-training scripts; a harness choice).
PRETRAIN_FRACTION = 0.3
#: SMIL's meta-training (train_missing_eval_missing.py): Adam 1e-3, weight decay 1e-4, StepLR(5000, 0.1) of
#: 8,000 iterations, i.e. x0.1 at 5/8 of the meta stage, which follows the pre-training (the same Adam).
SMIL_TRAINING = TrainingDefaults(optimizer="adam", lr=1e-3, weight_decay=1e-4, schedule="step",
                                 step_every=PRETRAIN_FRACTION + (1 - PRETRAIN_FRACTION) * 5000 / 8000, step_gamma=0.1,
                                 dropout="count_then_subset")


def channel_linear(layer: nn.Linear, t: torch.Tensor) -> torch.Tensor:
    """``layer`` on the channel axis (dim 1) of a B x C vector or a B x C x ... map (a 1x1x1 conv)."""
    return layer(t) if t.ndim == 2 else layer(t.movedim(1, -1)).movedim(-1, 1)


def broadcast(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """B booleans shaped to broadcast against a B x C x ... tensor."""
    return mask.to(like.device).view(-1, *[1] * (like.ndim - 1))


def mean_over_available(heads: list[nn.Linear], sources: list[torch.Tensor], available: torch.Tensor) -> torch.Tensor:
    """Mean over the available sources j (``available``: B x J) of head_j(source_j); missing sources are never read."""
    total, count = 0, 0
    for j, (head, src) in enumerate(zip(heads, sources)):
        keep = broadcast(available[:, j], src)
        total = total + torch.where(keep, channel_linear(head, torch.where(keep, src, 0)), 0)
        count = count + keep.to(src.dtype)
    return total / count.clamp_min(1)


class PrototypeReconstruction(nn.Module):
    """A missing modality's feature as the softplus-weighted mean of its K prototypes (SMIL fc0 + k-means)."""

    def __init__(self, dims: list[int], k: int) -> None:
        super().__init__()
        for m, d in enumerate(dims):
            self.register_buffer(f"centroids_{m}", torch.zeros(k, d))
        self.weights = nn.ModuleDict({f"{m}_{j}": nn.Linear(dims[j], k) for m in range(len(dims)) for j in range(len(dims)) if j != m})

    def centroids(self, m: int) -> torch.Tensor:
        return getattr(self, f"centroids_{m}")

    def prototype_weights(self, feats: list[torch.Tensor], available: torch.Tensor, m: int, noise: bool) -> torch.Tensor:
        """B x K (x ...) weights softplus(fc0(z_j) [+ eps]) for modality m, from the available j != m."""
        others = [j for j in range(len(feats)) if j != m]
        mu = mean_over_available([self.weights[f"{m}_{j}"] for j in others], [feats[j] for j in others], available[:, others])
        return F.softplus(mu + torch.randn_like(mu) if noise else mu)

    def forward(self, feats: list[torch.Tensor], available: torch.Tensor, noise: bool = False) -> list[torch.Tensor]:
        """``feats`` with each missing modality's feature replaced by its reconstruction."""
        out = []
        for m, z in enumerate(feats):
            keep = broadcast(available[:, m], z)
            if bool(keep.all()):
                out.append(z)
                continue
            w = self.prototype_weights(feats, available, m, noise)
            rec = torch.einsum("bk...,kc->bc...", w, self.centroids(m).to(w.dtype)) / w.sum(1, keepdim=True)
            out.append(torch.where(keep, z, rec))
        return out


class Prediction(NamedTuple):
    """One forward pass: logits, the fused feature and the hidden layer (None where there is none)."""

    logits: torch.Tensor
    fused: torch.Tensor
    hidden: torch.Tensor | None


class _Net(nn.Module):
    """What both task networks share: the reconstruction, the fused-feature perturbation and the fill of
    missing features (zeros before the priors exist, the reconstruction after).

    ``perturb`` of a forward: "noise" (training: eps ~ N(0, I) drawn, the code's ``meta_train=True``),
    "mean" (evaluation and the outer loss: eps = 0) or "off" (the clean pass of the code's ``mode='two'``).
    """

    def __init__(self, dims: list[int], fused_dim: int, k: int, weight_noise: bool) -> None:
        super().__init__()
        self.recon = PrototypeReconstruction(dims, k)
        self.fused_noise = nn.ModuleList(nn.Linear(d, fused_dim) for d in dims)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.weight_noise = weight_noise

    def complete(self, feats: list[torch.Tensor], available: torch.Tensor, perturb: str) -> list[torch.Tensor]:
        if not bool(self.fitted):
            return [torch.where(broadcast(available[:, m], z), z, 0) for m, z in enumerate(feats)]
        return self.recon(feats, available, noise=perturb == "noise" and self.weight_noise)

    def offset(self, heads: list[nn.Linear], sources: list[torch.Tensor], available: torch.Tensor, incomplete: torch.Tensor,
               perturb: str, like: torch.Tensor) -> torch.Tensor | float:
        """softplus(mu [+ eps]) on the incomplete samples (0 elsewhere, and before the stage or with ``perturb="off"``)."""
        if perturb == "off" or not bool(self.fitted) or not bool(incomplete.any()):
            return 0.0
        mu = mean_over_available(heads, sources, available)
        noise = F.softplus(mu + torch.randn_like(mu) if perturb == "noise" else mu)
        return torch.where(broadcast(incomplete, like), noise, 0)


class ClassifierNet(_Net):
    """SMIL's SoundLenet5New generalised to M modalities, with uni-modal heads for the pre-training stage."""

    inner = ("encoders.", "head.")

    def __init__(self, task, modalities: tuple[str, ...], k: int, hidden: int, weight_noise: bool) -> None:
        encoders = encoders_for(task.inputs, modalities)
        dims = [e.out_features for e in encoders]
        super().__init__(dims, sum(dims), k, weight_noise)
        self.encoders = encoders
        self.head = ClassifierHead(sum(dims), task.n_classes, hidden, dropout=0.5)
        self.hidden_noise = nn.Linear(sum(dims), hidden)
        self.unimodal = nn.ModuleList(ClassifierHead(d, task.n_classes, 32, dropout=0.0) for d in dims)

    def encode(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        return [enc(xm) for enc, xm in zip(self.encoders, x)]

    def decode(self, feats: list[torch.Tensor], available: torch.Tensor, perturb: str) -> Prediction:
        incomplete = ~available.all(1)
        fused = torch.cat(self.complete(feats, available, perturb), 1)
        fused = fused + self.offset(list(self.fused_noise), feats, available, incomplete, perturb, fused)
        fc1, relu, dropout, fc2 = self.head
        hidden = relu(fc1(fused))
        ones = torch.ones_like(available[:, :1])
        hidden = hidden + self.offset([self.hidden_noise], [fused], ones, incomplete, perturb, hidden)
        return Prediction(fc2(dropout(hidden)), fused, hidden)

    def forward(self, x: list[torch.Tensor], available: torch.Tensor, perturb: str = "mean") -> Prediction:
        return self.decode(self.encode(x), available, perturb)

    @staticmethod
    def prototype_rows(z: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """One modality's features of the samples ``keep``: the rows k-means clusters."""
        return z[keep]


class SegmenterNet(_Net):
    """The common U-Net with per-modality encoders, SMIL's reconstruction and perturbation at the bottleneck."""

    inner = ("encoders.", "decoder.")

    def __init__(self, task, modalities: tuple[str, ...], out: int, width: int, depth: int, k: int, weight_noise: bool) -> None:
        encoders = nn.ModuleList(UNetEncoder(1, width, depth) for _ in modalities)
        c, m = encoders[0].bottleneck_channels, len(modalities)
        super().__init__([c] * m, c * m, k, weight_noise)
        self.encoders = encoders
        self.decoder = UNetDecoder(m, encoders[0].skip_channels, c, out)

    def encode(self, x: torch.Tensor) -> list[EncoderOutput]:
        return [enc(x[:, i : i + 1]) for i, enc in enumerate(self.encoders)]

    def decode(self, feats: list[EncoderOutput], available: torch.Tensor, perturb: str) -> Prediction:
        bottleneck = [f.bottleneck for f in feats]
        fused = torch.cat(self.complete(bottleneck, available, perturb), 1)
        fused = fused + self.offset(list(self.fused_noise), bottleneck, available, ~available.all(1), perturb, fused)
        skips = [fill_missing_with_mean(torch.stack([f.skips[s] for f in feats], 1), available).flatten(1, 2)
                 for s in range(len(feats[0].skips))]
        return Prediction(self.decoder(fused, skips), fused, None)

    def forward(self, x: torch.Tensor, available: torch.Tensor, perturb: str = "mean") -> Prediction:
        return self.decode(self.encode(x), available, perturb)

    @staticmethod
    def prototype_rows(z: EncoderOutput, keep: torch.Tensor) -> torch.Tensor:
        """One modality's bottleneck of the samples ``keep`` as rows of C, one per voxel: what k-means clusters."""
        b = z.bottleneck[keep]
        return b.movedim(1, -1).reshape(-1, b.shape[1])


def select(x: torch.Tensor | list[torch.Tensor], rows: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
    """The samples ``rows`` (B booleans) of a batch given as one tensor or as per-modality tensors."""
    return x[rows] if isinstance(x, torch.Tensor) else [t[rows] for t in x]


class SMIL(Method):
    name = "smil"
    citation = "Ma et al., AAAI 2021, arXiv 2103.05677; code github.com/mengmenm/SMIL"
    outputs = {"segmentation": "regions", "classification": "labels"}
    own_task_loss = True  # its stages train other objectives (pre-training, meta-learning)
    defaults = {
        "k": 10,
        "mse_weight": 0.01,
        "inner_lr": 1e-3,
        "pretrain_fraction": None,  # classification PRETRAIN_FRACTION, segmentation ShaSpec's warm-up 80/180
        "freeze": "none",
        "weight_noise": False,
        "hidden": 64,
        "width": 8,
        "depth": 3,
    }
    constraints = {
        "freeze": OneOf("missing", "all", "none"), "pretrain_fraction": Between(0, 1, high_open=True),
        "mse_weight": Between(0), "inner_lr": Between(0),
        **{key: Between(1, integer=True) for key in ("k", "hidden", "width", "depth")},
    }
    #: SMIL's Adam on classification; ShaSpec's training on segmentation, as the other common-backbone methods.
    training_defaults = {"segmentation": SHASPEC_TRAINING, "classification": SMIL_TRAINING}

    def __init__(self, task, modalities: tuple[str, ...], **params: Any) -> None:
        super().__init__(task, modalities, **params)
        p = self.params
        seg = task.name == "segmentation"
        if p["pretrain_fraction"] is None:
            p["pretrain_fraction"] = SHASPEC_TRAINING.warmup_fraction if seg else PRETRAIN_FRACTION
        if seg:
            self.net: ClassifierNet | SegmenterNet = SegmenterNet(
                task, self.modalities, task.out_channels(self.output), p["width"], p["depth"], int(p["k"]), p["weight_noise"])
        else:
            self.net = ClassifierNet(task, self.modalities, int(p["k"]), p["hidden"], p["weight_noise"])
        self.register_buffer("frozen", torch.zeros(self.n_modalities, dtype=torch.bool))
        #: Modalities missing in some training batch so far (``freeze="missing"`` freezes their encoders).
        self.register_buffer("seen_missing", torch.zeros(self.n_modalities, dtype=torch.bool))

    # ---- stage: k-means priors, frozen encoders -------------------------------------------------

    def stage_steps(self, total: int) -> list[int]:
        return [min(max(round(self.params["pretrain_fraction"] * total), 1), max(total - 1, 0))]

    @torch.no_grad()
    def fit_stage(self, index: int, batches: Callable[[], Iterator[tuple[Any, torch.Tensor, torch.Tensor]]]) -> None:
        """k-means (K priors) of each modality's features over the training samples that have it; freeze encoders."""
        rows: list[list[torch.Tensor]] = [[] for _ in self.modalities]
        for x, available, _ in batches():
            for m, z in enumerate(self.net.encode(x)):
                rows[m].append(self.net.prototype_rows(z, available[:, m]).cpu())
            self.seen_missing |= ~available.all(0).to(self.seen_missing.device)
        generator = torch.Generator().manual_seed(0)
        for m, chunks in enumerate(rows):
            points = torch.cat(chunks).float()
            buf = self.net.recon.centroids(m)
            if len(points) == 0:
                buf.zero_()  # a modality no training sample has: its reconstruction is 0
                continue
            centres = partial_kmeans([points], torch.ones(len(points), 1, dtype=torch.bool), buf.shape[0], 100, generator).centres[0]
            buf.copy_(centres[torch.arange(buf.shape[0]) % len(centres)])  # fewer points than K: priors repeat
        self.net.fitted.fill_(True)
        rule = self.params["freeze"]
        self.frozen.copy_(self.seen_missing if rule == "missing" else torch.full_like(self.frozen, rule == "all"))
        self._apply_frozen()

    def _apply_frozen(self) -> None:
        """Frozen encoders' parameters take no gradient; their mode stays the model's (the code's meta passes run in train mode)."""
        for enc, frozen in zip(self.net.encoders, self.frozen.tolist()):
            enc.requires_grad_(not frozen)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._apply_frozen()
        return result

    # ---- forward -----------------------------------------------------------------------------------

    def encode(self, x):
        return self.net.encode(x)

    def decode(self, features, available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        logits = self.net.decode(features, available, "mean").logits
        out = Output(logits)
        if target is not None:
            out.losses.update(self.task_loss(logits, target))
        return out

    def forward(self, x, available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        if target is None or not self.training:
            return self.decode(self.encode(x), available, target)
        self.seen_missing |= ~available.all(0).to(self.seen_missing.device)
        if not bool(self.net.fitted):
            return self._pretrain(x, available, target)
        return self._meta(x, available, target)

    def _task(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The task's loss as one term (CE on classification; Dice + BCE on segmentation)."""
        return sum(self.task_loss(logits, target).values())

    def _pretrain(self, x, available: torch.Tensor, target: torch.Tensor) -> Output:
        """Before the stage: the fusion model on complete samples and, on classification, each modality's own head
        on the samples that have it (SMIL's train_mnist.py, train_sound.py and train_soundmnist.py in one loss)."""
        feats = self.net.encode(x)
        complete = available.all(1)
        pred = self.net.decode(feats, available, "off")
        out = Output(pred.logits)
        if bool(complete.any()):
            out.losses["task"] = self._task(pred.logits[complete], target[complete])
        if isinstance(self.net, ClassifierNet):
            terms = [self._task(head(z[available[:, m]]), target[available[:, m]])
                     for m, (head, z) in enumerate(zip(self.net.unimodal, feats)) if bool(available[:, m].any())]
            out.losses["unimodal"] = sum(terms) / len(terms)
        elif "task" not in out.losses:  # segmentation with no complete sample: the prediction from what is there
            out.losses["task"] = self._task(pred.logits, target)
        return out

    def inner_lr(self) -> float:
        """SMIL's lr_inner x 0.1 every eighth of the meta stage (0.1 ** (iteration // 1000) of 8,000)."""
        start = self.stage_steps(self.total_steps)[0]
        progress = (self.step - start) / max(self.total_steps - start, 1)
        return self.params["inner_lr"] * 0.1 ** math.floor(8 * min(max(progress, 0.0), 1.0) + 1e-9)

    def _meta(self, x, available: torch.Tensor, target: torch.Tensor) -> Output:
        """One meta-learning iteration (train_missing_eval_missing.py ``meta_training``).

        The passes run in the model's mode on a copy of the buffers, as MetaNN's ``functional`` runs its own
        deep copy: batch statistics in training, and running statistics left as they were.
        """
        net = self.net
        params = {n: p for n, p in net.named_parameters() if p.requires_grad and n.startswith(net.inner)}
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        incomplete, complete = ~available.all(1), available.all(1)
        losses: dict[str, torch.Tensor] = {}
        adapted = params
        logits: list[tuple[torch.Tensor, torch.Tensor]] = []  # (rows, their logits), for the returned B-row logits
        if bool(incomplete.any()):
            inner = functional_call(net, params | buffers, (select(x, incomplete), available[incomplete]), {"perturb": "noise"})
            losses["task"] = self._task(inner.logits, target[incomplete])
            grads = torch.autograd.grad(losses["task"], list(params.values()), create_graph=True, allow_unused=True)
            lr = self.inner_lr()
            adapted = {n: p if g is None else p - lr * g for (n, p), g in zip(params.items(), grads)}
            logits.append((incomplete, inner.logits))
        if bool(complete.any()):
            xc, yc = select(x, complete), target[complete]
            full = available[complete]
            clean = functional_call(net, adapted | buffers, (xc, full), {"perturb": "off"})
            if bool(incomplete.any()):
                patterns = available[incomplete]
                simulated = patterns[torch.arange(len(yc), device=patterns.device) % len(patterns)]
                noised = functional_call(net, adapted | buffers, (xc, simulated), {"perturb": "mean"})
                losses["outer_task"] = self._task(noised.logits, yc)
                w = self.params["mse_weight"]
                losses["fused_mse"] = w * F.mse_loss(noised.fused, clean.fused)
                if clean.hidden is not None:
                    losses["hidden_mse"] = w * F.mse_loss(noised.hidden, clean.hidden)
            else:
                losses["task"] = self._task(clean.logits, yc)
            logits.append((complete, clean.logits))
        full = logits[0][1].new_zeros(len(target), *logits[0][1].shape[1:])
        for rows, part in logits:
            full[rows] = part.detach()
        return Output(full, losses)

