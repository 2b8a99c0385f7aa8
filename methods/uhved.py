"""uhved: U-HVED, the hetero-modal variational encoder-decoder (multi-scale MVAE in a 3-D U-Net).

Paper: R. Dorent, S. Joutard, M. Modat, S. Ourselin, T. Vercauteren, "Hetero-Modal Variational
Encoder-Decoder for Joint Modality Completion and Segmentation", MICCAI 2019, arXiv 1907.11150.
Official code: github.com/ReubenDo/U-HVED (MIT), ``extensions/u_hved/{u_hved_net.py,
application.py, config.ini}`` at commit f5254a8. Building blocks: missbench/nets/uhemis.py (shared
with methods/hemis.py).

What is built (the code):
- one encoder per modality, shaped as U-HeMIS's but with blocks ending in n channels
  (8/16/32/64 at width 8); at each of the 4 scales the first half of the channels is the mean and
  the second half the log-variance, clipped to [-50, 50] (``ConvEncoder.layer_op``, ``clip``);
- fusion (``GaussianSampler``, ``Product_Gaussian_main``): product of the available modalities'
  Gaussian experts and a standard-normal prior expert, per scale, voxel and channel:
  T = 1 + Σ_avail 1/(σ²_m + 1e-7), μ = Σ_avail (μ_m/(σ²_m + 1e-7)) / T, σ² = 1/T, and the code's
  log-variance log(σ² + 1e-7) (`product_of_experts`);
- a reparameterised sample μ + exp(logvar/2)·ε per scale in training; at evaluation the posterior
  mean (``inference="mean"``, the default) or, as the code's segmentation inference does
  (``is_inference=False`` for ``output_mod == 'seg'``), a sample (``inference="sample"``);
- five decoders of the same shape (the U-HeMIS decoder on the 4/8/16/32 latent channels): one for
  the 4-class segmentation and one image decoder per modality (1 channel), all fed the same
  multi-scale latent;
- loss (application.py): CE + Dice (softmax over labels 0/1/2/4) + 0.1·KL + 0.1·reconstruction MSE
  + the code's L2 regulariser (``l2`` = 1e-5 x the mean over conv kernels of sum(w^2)/2,
  the ``l2`` term). The KL (``compute_KLD``), at each scale: with q_A the product over the
  available modalities and q_S the product over a subset S (each with the prior expert),
  (1/14)·Σ_S KL(q_A ‖ q_S) + (1/15)·Σ_S KL(q_S ‖ N(0, I)) over the 15 non-empty subsets S; every
  KL is the mean over voxels and channels of 0.5(−1 + logvar_2 − logvar_1 + (σ²_1 + (μ_1 − μ_2)²)/
  (σ²_2 + 1e-7)) (``KL_divergence``: against the standard normal through logvar_2 = 0); the total
  is the mean over the 4 scales. 1/14 because the S = A term is (up to the 1e-7) zero.

Parameters at width 8 with 4 modalities and 4 classes: 1,250,552 (each encoder 221,560;
segmentation decoder 72,872; each image decoder 72,860), counted in tests/test_uhved.py.

Training defaults: as U-HeMIS (missbench/nets/uhemis.py ``UHVED_TRAINING``): Adam, lr 1e-3, kept
count uniform in 1..M then a uniform subset (``count_then_subset``), 60k iterations at batch 1 in the
paper budget.

``backbone="common"`` (``--backbone common``): per-modality harness U-Net encoders
(missbench/nets/unet3d.py, width 8, depth 3) whose maps split in halves into means and
log-variances, the same product of experts, and harness U-Net decoders for the segmentation and
each modality's image: 1,000,768 parameters.

Classification (issue #4; U-HVED has no classification experiment): one encoder per modality from
missbench/nets/classification.py (SMIL's LeNet image and MFCC audio encoders, an MLP for tables)
followed by a linear layer to 2 x ``features`` (64): the mean and the clipped log-variance of that
modality's Gaussian expert over a 64-d latent; the same product of experts with the N(0, I) prior, a
reparameterised sample in training and the posterior mean at evaluation; the shared FC-ReLU-dropout-FC
head (``ClassifierHead``) on the latent; cross-entropy + 0.1·KL (the same formula, one scale) + 0.1·MSE
reconstruction of each available modality's input from the latent by a per-modality MLP decoder
(latent -> 256 -> the flattened input, the image decoders' role). No L2 term there (the code's
regulariser is on its 3-D conv kernels). Training: the reference methods' avMNIST training
(ShaSpec's: Adam 1e-3, weight decay 1e-2, x0.9 every third of the budget), not the 3-D schedule.

Deviations, and why:
- reconstruction (``recon_over``): the code reconstructs *all* four modalities, missing ones
  included, from the complete input it still holds (its modality dropping only masks the fusion).
  Here the harness zeroes a missing modality's input before the method sees it and gives no other
  access to it, so the only faithful targets within the interface are the available modalities':
  the MSE is averaged over the available (sample, modality) pairs and their voxels (the code's mean
  over all 4 channels and voxels when all are present). Every image decoder still decodes from the
  fused latent of the available modalities; it is just never trained on a modality it cannot see.
- KL subsets (``kl_over``): the code's 15 subsets S use the encodings of the real images of every
  modality. With zeroed inputs the analogue is ``"available"`` (default): the non-empty subsets of
  the available modalities, averaged as the code does (Σ KL(q_A‖q_S)/(2^|A| − 2), no inter term
  when |A| = 1; Σ KL(q_S‖N)/(2^|A| − 1)); with all modalities present it is the code's formula
  exactly. ``"all"`` runs the code's formula literally over all 15 subsets, where the subsets with
  a missing modality now hold the encoding of a zero image.
- evaluation uses the posterior mean by default (the paper's description); ``inference="sample"``
  is the code's segmentation inference. Sampling noise comes from a generator seeded by the
  method's seed and the trainer's iteration (``set_step``), so a resumed run draws the same noise.
- schedule (÷4 every sixth of the budget, as the code's every 10k of 60k), Dice formula, data
  pipeline and trilinear grid: as methods/hemis.py and missbench/nets/uhemis.py say.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple

import torch
from torch import nn

from missbench.core.method import Method, Output
from missbench.core.params import Between, OneOf
from missbench.core.training import SHASPEC_AVMNIST_TRAINING, UHVED_TRAINING
from missbench.nets.classification import ClassifierHead, encoders_for
from missbench.nets.fusion import POE_EPS, product_of_experts
from missbench.nets.unet3d import PyramidDecoder, PyramidEncoder
from missbench.nets.uhemis import UHeMISDecoder, UHeMISEncoder, init_he_truncated, niftynet_l2

#: The code's clip of log-variances, "so that variances = exp(logvars) behaves well".
LOGVAR_CLIP = 50.0


class Posterior(NamedTuple):
    """One modality's encoding: per scale (full resolution first) the means and clipped log-variances,
    and its input image (the reconstruction target)."""

    mu: list[torch.Tensor]
    logvar: list[torch.Tensor]
    image: torch.Tensor



def gaussian_kl(mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Element-wise KL(N(mu1, e^logvar1) ‖ N(mu2, e^logvar2)) with the code's 1e-7 in the denominator."""
    return 0.5 * (-1 + logvar2 - logvar1 + (logvar1.exp() + (mu1 - mu2).pow(2)) / (logvar2.exp() + POE_EPS))


def nonempty_subsets(m: int) -> torch.Tensor:
    """The 2^m - 1 non-empty subsets of m modalities as an S x m boolean matrix."""
    return torch.tensor([[i in c for i in range(m)] for k in range(1, m + 1) for c in itertools.combinations(range(m), k)])


class UHVED(Method):
    name = "uhved"
    citation = "Dorent et al., MICCAI 2019, arXiv 1907.11150; code github.com/ReubenDo/U-HVED"
    outputs = {"segmentation": "labels", "classification": "labels"}
    defaults = {
        "backbone": "paper",
        "width": 8,
        "depth": 3,
        "kl_weight": 0.1,
        "recon_weight": 0.1,
        "l2": 1e-5,
        "inference": "mean",
        "kl_over": "available",
        "features": 64,
    }
    constraints = {"backbone": OneOf("paper", "common"), "inference": OneOf("mean", "sample"), "kl_over": OneOf("available", "all"),
                   "kl_weight": Between(0), "recon_weight": Between(0), "l2": Between(0),
                   **{key: Between(1, integer=True) for key in ("width", "depth", "features")}}
    #: No paper trains it on classification: the avMNIST training the reference methods use (ShaSpec's).
    training_defaults = {"segmentation": UHVED_TRAINING, "classification": SHASPEC_AVMNIST_TRAINING}

    def __init__(self, task, modalities: tuple[str, ...], **params: Any) -> None:
        super().__init__(task, modalities, **params)
        p = self.params
        w, out = p["width"], task.out_channels(self.output)
        self.classification = task.name == "classification"
        if self.classification:
            self.encoders = nn.ModuleList(  # no activation: the halves are a mean and a log-variance
                nn.Sequential(enc, nn.Linear(enc.out_features, 2 * p["features"])) for enc in encoders_for(task.inputs, self.modalities)
            )
            self.latent_channels = [p["features"]]
            self.seg_decoder = ClassifierHead(p["features"], out)
            self.image_decoders = nn.ModuleList(
                nn.Sequential(nn.Linear(p["features"], 256), nn.ReLU(), nn.Linear(256, math.prod(task.inputs[m].shape)))
                for m in self.modalities
            )
        elif p["backbone"] == "paper":
            self.encoders = nn.ModuleList(UHeMISEncoder(w, split_output=True) for _ in modalities)
            self.latent_channels = [c // 2 for c in self.encoders[0].out_channels]
            self.seg_decoder = UHeMISDecoder(self.latent_channels, out, w)
            self.image_decoders = nn.ModuleList(UHeMISDecoder(self.latent_channels, 1, w) for _ in modalities)
            init_he_truncated(self)
        else:  # common: the U-Net's maps split in halves into means and log-variances, as the paper's are
            self.encoders = nn.ModuleList(PyramidEncoder(1, w, p["depth"]) for _ in modalities)
            self.latent_channels = [c // 2 for c in self.encoders[0].out_channels]
            self.seg_decoder = PyramidDecoder(self.latent_channels, out)
            self.image_decoders = nn.ModuleList(PyramidDecoder(self.latent_channels, 1) for _ in modalities)
        self.register_buffer("subsets", nonempty_subsets(self.n_modalities), persistent=False)
        # Drawn after the weights, from the seeded global generator: the noise stream is the run's.
        self.noise_seed = int(torch.randint(0, 2**31 - 1, (), device="cpu"))

    def encode(self, x: torch.Tensor | list[torch.Tensor]) -> list[Posterior]:
        """Per modality: means and clipped log-variances at the 4 scales (on classification: of the one
        latent vector), and the modality's input."""
        out = []
        for i, enc in enumerate(self.encoders):
            image = x[i] if self.classification else x[:, i : i + 1]
            skips = [enc(image)] if self.classification else enc(image)
            half = self.latent_channels
            out.append(Posterior(
                [s[:, :h] for s, h in zip(skips, half)],
                [s[:, h:].clamp(-LOGVAR_CLIP, LOGVAR_CLIP) for s, h in zip(skips, half)],
                image,
            ))
        return out

    def decode(self, features: list[Posterior], available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        available = available.to(features[0].image.device)
        mus = [torch.stack([f.mu[k] for f in features], 1) for k in range(len(self.latent_channels))]
        logvars = [torch.stack([f.logvar[k] for f in features], 1) for k in range(len(self.latent_channels))]
        sample = self.training or self.params["inference"] == "sample"
        gen = None
        if sample:
            gen = torch.Generator(device=mus[0].device).manual_seed(self.noise_seed * 1_000_003 + self.step)
        z = []
        for mu, logvar in zip(mus, logvars):
            post_mu, post_logvar = product_of_experts(mu, logvar, available)
            if sample:
                noise = torch.randn(post_mu.shape, generator=gen, device=post_mu.device, dtype=post_mu.dtype)
                post_mu = post_mu + torch.exp(0.5 * post_logvar) * noise
            z.append(post_mu)
        out = Output(self.seg_decoder(z[0] if self.classification else z))
        if target is None:
            return out
        p = self.params
        if p["kl_weight"]:
            out.losses["kl"] = p["kl_weight"] * self.kl_loss(mus, logvars, available)
        if p["recon_weight"]:
            per = self.recon_errors(z, features)
            out.losses["recon"] = p["recon_weight"] * torch.where(available, per, 0).sum() / available.sum().clamp_min(1)
        if p["l2"] and not self.classification:
            out.losses["l2"] = niftynet_l2(self, p["l2"])
        return out

    def recon_errors(self, z: list[torch.Tensor], features: list[Posterior]) -> torch.Tensor:
        """B x M mean squared errors of each modality's decoder output against its input."""
        if self.classification:
            return torch.stack([(dec(z[0]) - f.image.flatten(1)).pow(2).mean(1) for dec, f in zip(self.image_decoders, features)], 1)
        recon = torch.cat([dec(z) for dec in self.image_decoders], 1)  # B x M x ...
        images = torch.cat([f.image for f in features], 1)
        return (recon - images).pow(2).flatten(2).mean(2)

    def kl_loss(self, mus: list[torch.Tensor], logvars: list[torch.Tensor], available: torch.Tensor) -> torch.Tensor:
        """The code's ``compute_KLD`` per sample, averaged over the scales, then over the batch (see the module docstring).

        ``mus``/``logvars``: per scale, B x M x C x ... The subset posteriors are computed for all
        subsets at once (precision sums as a subset x modality product); subsets that are not
        counted for a sample are masked out of its sums with ``torch.where``.
        """
        subsets = self.subsets.to(available.device)
        if self.params["kl_over"] == "available":
            valid = (~subsets[None] | available[:, None]).all(-1)  # B x S: S within the available set
        else:
            valid = torch.ones(available.shape[0], len(subsets), dtype=torch.bool, device=available.device)
        used = valid.any(0)
        subsets, valid = subsets[used], valid[:, used]
        n = valid.sum(1)
        total = 0.0
        for mu, logvar in zip(mus, logvars):
            full_mu, full_logvar = product_of_experts(mu, logvar, available)
            weights = subsets.to(mu.dtype)
            precision = 1 / (logvar.exp() + POE_EPS)
            sub_total = 1 + torch.einsum("sm,bm...->bs...", weights, precision)  # the prior's precision 1
            sub_mu = torch.einsum("sm,bm...->bs...", weights, mu * precision) / sub_total
            sub_logvar = torch.log(1 / sub_total + POE_EPS)
            zero = mu.new_zeros(())
            inter = gaussian_kl(full_mu.unsqueeze(1), full_logvar.unsqueeze(1), sub_mu, sub_logvar).flatten(2).mean(2)
            prior = gaussian_kl(sub_mu, sub_logvar, zero, zero).flatten(2).mean(2)  # B x S
            inter = torch.where(valid, inter, 0).sum(1)
            prior = torch.where(valid, prior, 0).sum(1)
            total = total + torch.where(n > 1, inter / (n - 1).clamp_min(1), 0) + prior / n
        return (total / len(mus)).mean()
