"""mmFormer: multimodal medical Transformer for incomplete multimodal brain-tumour segmentation.

Paper: Y. Zhang, N. He, J. Yang, Y. Li, D. Wei, Y. Huang, Y. Zhang, Z. He, Y. Zheng, "mmFormer:
Multimodal Medical Transformer for Incomplete Multimodal Learning of Brain Tumor Segmentation",
MICCAI 2022, arXiv 2206.02425. Official code: github.com/YaoZhang93/mmFormer (Apache-2.0):
mmformer.py, layers.py, train.py, utils/criterions.py, job.sh. Blocks in missbench/nets/mmformer.py.

What is built, as in the code:
- per modality, a hybrid encoder: conv stages of 8, 16, 32, 64, 128 channels (four stride-2 convs,
  so the input side must be a multiple of 16), then a 1x1 conv to 512-d tokens, one learnable
  positional embedding per modality (zeros at init) and an intra-modal Transformer (depth 1, 8 heads,
  dim 512, MLP 4096, dropout 0.1, positions added before every block) over that modality's tokens;
- masking (the code's MaskModal, the paper's Bernoulli indicators): the conv skips at 1, 1/2, 1/4,
  1/8 scale and the intra-modal Transformer's output of a missing modality are zeroed. The conv
  bottleneck itself only feeds the auxiliary decoder;
- an inter-modal Transformer (same sizes) over the M*N tokens of all modalities concatenated
  modality by modality (missing ones zero), positions = the M intra-modal tables concatenated (so
  a missing modality's tokens enter as its positional embedding, as in the code);
- its output reshaped to a (M*512)-channel map, 1x1 conv to M*128 channels, and a conv decoder that
  fuses the M masked skips at every scale (``fusion_prenorm``: 1x1, 3x3, 1x1 convs) with
  deep-supervision heads at 1/2, 1/4, 1/8, 1/16 scale (softmax, then trilinear upsampling);
- one auxiliary decoder shared by all modalities (the code's single ``decoder_sep``) on each
  modality's conv maps (bottleneck = the raw conv x5, not the Transformer output);
- loss (train.py, region_fusion_start_epoch 0 in job.sh): fused + sum over modalities of the auxiliary
  decoder's + sum over the four deep-supervision outputs, each the code's class-weighted CE
  (``softmax_weighted_loss``) + Dice over all four classes (``dice_loss``), unweighted: the same
  criterions as RFNet's, shared from missbench/nets/rfnet.py;
- init: Kaiming normal on every Conv3d weight, PyTorch defaults elsewhere;
- 36,654,416 parameters with four modalities (the code's count, counted in a test), including the
  code's four intra-modal ``decode_conv`` 1x1 convs (512 -> 128, 262,656 parameters) that its forward
  never calls: kept so the count and the official state dict match; they get no gradient.

Output: "labels" (softmax over 0, 1, 2, 4; the code's 4 classes). In evaluation only the fused
output is computed and returned.

Token grid (the code fixes 8^3 = 512 tokens, i.e. 128^3 input): the positional tables are stored at
``pos_grid``^3 (default 8, the code's) and resampled trilinearly to the actual bottleneck grid when
the input is not 16 * pos_grid per side (``nets.mmformer.resize_positions``), so small CPU patches
and anisotropic patches such as 80x160x160 work with the same parameter count, and at 128^3 nothing
is resampled: official behaviour. (Checked outside the test suite against a transcription of the
code's Model with its weights renamed as ``official_state_dict`` does, modalities in the code's order:
at 2 x 4 x 128^3 the softmax output differs by at most 9e-8 and all six loss terms agree, likewise at
32^3 with the code's patch_size set to 2.) Set ``pos_grid`` to patch / 16 to store the tables at the
training grid instead (then the count changes). Parameter names: ``width`` (basic_dims 8), ``dim`` (512),
``mlp_dim`` (4096), ``heads`` (8), ``layers`` (the code's transformer depth, 1), ``dropout`` (0.1).

Paper vs code, the code by default:
- ``token_layout``: "official" reshapes the inter-modal output (B, M*N, 512) straight to
  (B, grid, M*512), the code's ``view``: each output voxel gets M consecutive tokens in the
  modality-major sequence, not the M modalities' tokens at that voxel. "aligned" regroups per
  position (the modality tokens of voxel n concatenated), what the paper's figure suggests.

Official checkpoints (``official_state_dict``; the code's ``mmformer/mmformer.py`` ``Model`` at
commit b18663adbfd0323656083e0470420c8c715c1782): the code's ``preprocess.py`` stacks FLAIR, T1ce,
T1, T2 and its Model reads channel k with the k-th modality's modules. Beyond those per-modality
modules (renamed by modality name), position matters in: the masks (B x 4, in that order); the
skips stacked in that order for ``MaskModal`` and read by the first 1x1 conv of ``RFM1``..``RFM4``;
the intra-modal tokens and positional tables concatenated in that order for the inter-modal
Transformer (whose attention is itself order-free); and the ``view`` of its output to (8, 8, 8, 4*512),
which gives each voxel 4 consecutive tokens of the sequence, so voxels 0-127 carry FLAIR's tokens,
128-255 T1c's and so on, read by ``multimodal_decode_conv``. That last dependence is spatial, not a
channel permutation, so no reordering of weights makes the data set's order (FLAIR, T1, T1c, T2)
compute the code's function: build with ``fusion_order="official"``, and the loader is a rename
(tests/test_official_checkpoints.py compares with a transcription of the code's fusion; a rename into
the default order gives softmax outputs off by up to 0.99). ``fusion_order`` is the order in which the
fusion concatenates the modalities' skips, tokens and positional tables: "data" (default) the order
of ``modalities``, "official" the code's FLAIR, T1c, T1, T2 whatever the data set's (it needs those
four). Trained from scratch neither is more faithful (the code's is its data's order); "data" keeps
the numbers of earlier runs.

Deviations (stated, not hidden):
- ``aux_over``: the harness zeroes missing inputs before a method sees them; the code never zeroes
  images (its masks act on features only), so its auxiliary decoder always sees real images of all
  four modalities. The faithful analogue and the default is "available": the auxiliary loss of
  modality m is taken over the samples where m is present. "all" takes it over every sample
  (here on zero inputs for missing modalities).
- training: Adam lr 2e-4 (job.sh), weight decay 1e-4 (train.py), betas (0.9, 0.999), eps 1e-8, poly
  0.9, amsgrad as the code, uniform over the 15 subsets per sample (datasets_nii.py). The code's
  poly steps per epoch, the harness's per iteration.
- no augmentation beyond the harness's flips (the code: random rotation, intensity shift, flips).
- on maps of one voxel (16^3 patches only) reflect padding falls back to replicate and instance
  norm returns its limit, zeros (torch refuses it), see nets/mmformer.py.

``backbone="common"``: per-modality ``UNetEncoder(1, width, depth)`` (width 8, depth 3) in place of
the conv half of the hybrid encoders, the same intra-modal Transformers on its bottleneck (tokens
(patch/8)^3), the same masking and inter-modal Transformer, a ``UNetDecoder`` over the M masked skips
(its 1x1 projection of the concatenated skips standing for ``fusion_prenorm``) as fused decoder, a
second ``UNetDecoder`` on one modality's maps as the shared auxiliary decoder, and 1x1 deep-supervision
heads on the fused bottleneck and every decoder block below full resolution. Transformer sizes stay
the paper's, so it has 29,083,092 parameters (counted in a test; the two Transformers dominate:
shrink ``dim`` / ``mlp_dim`` to compare at equal size).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from missbench.core.method import Method, Output, modality_slots
from missbench.core.params import Between, OneOf
from missbench.core.training import TrainingDefaults
from missbench.nets.mmformer import (
    DecoderFuse,
    DecoderSep,
    HybridConvEncoder,
    Transformer,
    map_from_tokens,
    resize_positions,
    tokens_from_map,
)
from missbench.nets.rfnet import batch_dice_loss, mask_modalities, softmax_weighted_ce
from missbench.nets.unet3d import UNetDecoder, UNetEncoder
from missbench.core.tasks.segmentation import labels_onehot

#: The code's modality prefixes (flair_encoder, t1ce_pos, ...), in the order of its input channels, and the
#: data set names they stand for.
OFFICIAL_MODALITIES = {"flair": "FLAIR", "t1ce": "T1c", "t1": "T1", "t2": "T2"}
DOWNSAMPLING = 16


class ModalityFeatures(NamedTuple):
    """One modality's encoding: conv skips (full resolution first), the conv bottleneck, and its intra-modal Transformer tokens (B x N x dim)."""

    skips: list[torch.Tensor]
    bottleneck: torch.Tensor
    tokens: torch.Tensor


class MMFormer(Method):
    name = "mmformer"
    citation = "Zhang et al., MICCAI 2022, arXiv 2206.02425; code github.com/YaoZhang93/mmFormer"
    outputs = {"segmentation": "labels"}
    own_task_loss = True  # deep supervision: the paper's loss on the fused and the separate outputs
    defaults = {
        "backbone": "paper",
        "width": 8,  # basic_dims (paper); the U-Net width (common)
        "depth": 3,  # U-Net depth, common backbone only (the paper's conv encoder has 4 downsamplings)
        "dim": 512,  # transformer_basic_dims
        "mlp_dim": 4096,
        "heads": 8,
        "layers": 1,  # the code's transformer `depth`
        "dropout": 0.1,
        "pos_grid": 8,  # the code's patch_size: 128^3 input / 16
        "token_layout": "official",
        "fusion_order": "data",
        "aux_over": "available",
        "sep_weight": 1.0,
        "deep_weight": 1.0,
    }
    constraints = {
        "backbone": OneOf("paper", "common"), "token_layout": OneOf("official", "aligned"),
        "fusion_order": OneOf("data", "official"), "aux_over": OneOf("available", "all"),
        **{key: Between(1, integer=True) for key in ("width", "depth", "dim", "mlp_dim", "heads", "layers", "pos_grid")},
        "dropout": Between(0, 1, high_open=True), "sep_weight": Between(0), "deep_weight": Between(0),
    }
    training_defaults = {"segmentation": TrainingDefaults(
        optimizer="adam", lr=2e-4, momentum=0.9, nesterov=False, weight_decay=1e-4, amsgrad=True,
        schedule="poly", dropout="uniform_subset", warmup_fraction=0.0, sampler="rfnet",
    )}
    official_code = "github.com/YaoZhang93/mmFormer at b18663adbfd0323656083e0470420c8c715c1782, mmformer/mmformer.py, Model"

    def __init__(self, task, modalities: tuple[str, ...], **params: Any) -> None:
        super().__init__(task, modalities, **params)
        p = self.params
        if p["dim"] % p["heads"]:
            raise ValueError(f"mmformer: dim {p['dim']} is not divisible by heads {p['heads']}")
        m, w, d, g = self.n_modalities, p["width"], p["dim"], p["pos_grid"]
        n_out = task.out_channels(self.output)
        self.paper = p["backbone"] == "paper"
        #: The modalities (indices into ``modalities``) in the order the fusion concatenates them.
        self.slots = self.official_slots() if p["fusion_order"] == "official" else list(range(m))

        def transformer() -> Transformer:
            return Transformer(d, p["layers"], p["heads"], p["mlp_dim"], p["dropout"])

        if self.paper:
            self.encoders = nn.ModuleList(HybridConvEncoder(w) for _ in range(m))
            c, self.downsampling = 16 * w, DOWNSAMPLING
        else:
            self.encoders = nn.ModuleList(UNetEncoder(1, w, p["depth"]) for _ in range(m))
            c, self.downsampling = self.encoders[0].bottleneck_channels, self.encoders[0].downsampling
        self.encode_convs = nn.ModuleList(nn.Conv3d(c, d, 1) for _ in range(m))
        if self.paper:  # in the code, defined but never called
            self.decode_convs = nn.ModuleList(nn.Conv3d(d, c, 1) for _ in range(m))
        self.pos = nn.ParameterList(nn.Parameter(torch.zeros(1, g**3, d)) for _ in range(m))
        self.intra_transformers = nn.ModuleList(transformer() for _ in range(m))
        self.inter_transformer = transformer()
        self.multimodal_decode_conv = nn.Conv3d(d * m, c * m, 1)
        if self.paper:
            self.decoder_fuse = DecoderFuse(w, n_out, m)
            self.decoder_sep = DecoderSep(w, n_out)
            for module in self.modules():
                if isinstance(module, nn.Conv3d):
                    nn.init.kaiming_normal_(module.weight)
        else:
            skip_c = self.encoders[0].skip_channels
            self.decoder_fuse = UNetDecoder(m, skip_c, c, n_out)
            self.decoder_sep = UNetDecoder(1, skip_c, c, n_out)
            # Deep supervision: the fused bottleneck and every decoder block below full resolution.
            self.deep_heads = nn.ModuleList([nn.Conv3d(m * c, n_out, 1)] + [nn.Conv3d(k, n_out, 1) for k in reversed(skip_c[1:])])

    # --- encoding: each modality on its own ---

    def positions(self, m: int, grid: tuple[int, ...]) -> torch.Tensor:
        """Modality ``m``'s positional table at token grid ``grid`` (resampled unless it is pos_grid^3)."""
        return resize_positions(self.pos[m], (self.params["pos_grid"],) * 3, grid)

    def encode(self, x: torch.Tensor) -> list[ModalityFeatures]:
        if self.paper and any(s % DOWNSAMPLING for s in x.shape[2:]):
            raise ValueError(f"mmformer: input spatial size {tuple(x.shape[2:])} must be a multiple of {DOWNSAMPLING} per side")
        out = []
        for m in range(self.n_modalities):
            enc = self.encoders[m](x[:, m : m + 1])
            skips, bottleneck = (enc[:-1], enc[-1]) if self.paper else (list(enc.skips), enc.bottleneck)
            grid = tuple(bottleneck.shape[2:])
            tokens = tokens_from_map(self.encode_convs[m](bottleneck))
            out.append(ModalityFeatures(skips, bottleneck, self.intra_transformers[m](tokens, self.positions(m, grid))))
        return out

    # --- fusion and decoding under an availability pattern ---

    def decode(self, features: list[ModalityFeatures], available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        p = self.params
        ref = features[0].bottleneck
        b, m, grid = ref.shape[0], self.n_modalities, tuple(ref.shape[2:])
        available = available.to(ref.device)
        # Skips, tokens and positions concatenated modality by modality, in fusion order.
        slots, kept = [features[i] for i in self.slots], available[:, self.slots]
        skips = [mask_modalities(torch.stack([f.skips[k] for f in slots], 1), kept).flatten(1, 2) for k in range(len(features[0].skips))]
        tokens = torch.stack([f.tokens for f in slots], 1)  # B x M x N x dim
        tokens = tokens * kept.to(tokens.dtype).view(b, m, 1, 1)
        n, d = tokens.shape[2:]
        pos = torch.cat([self.positions(i, grid) for i in self.slots], 1)
        inter = self.inter_transformer(tokens.reshape(b, m * n, d), pos)
        if p["token_layout"] == "official":
            inter_map = inter.reshape(b, *grid, m * d).permute(0, 4, 1, 2, 3)
        else:
            inter_map = map_from_tokens(inter.reshape(b, m, n, d).transpose(1, 2).reshape(b, n, m * d), grid)
        bottleneck = self.multimodal_decode_conv(inter_map)
        deep = target is not None and p["deep_weight"] != 0
        logits, side = self.fused_decoder(bottleneck, skips, deep)
        out = Output(logits)
        if target is None:
            return out
        onehot = labels_onehot(target)
        out.losses["fuse_ce"], out.losses["fuse_dice"] = self.criterion(logits, onehot)
        if deep:
            terms = [self.criterion(s, onehot) for s in side]
            out.losses["deep_ce"] = p["deep_weight"] * sum(t[0] for t in terms)
            out.losses["deep_dice"] = p["deep_weight"] * sum(t[1] for t in terms)
        if p["sep_weight"] != 0:
            ce, dice = logits.new_zeros(()), logits.new_zeros(())
            for i, f in enumerate(features):
                rows = available[:, i] if p["aux_over"] == "available" else torch.ones_like(available[:, i])
                if not rows.any():
                    continue
                c, dl = self.criterion(self.separate_decoder(f, rows), onehot[rows])
                ce, dice = ce + c, dice + dl
            out.losses["sep_ce"] = p["sep_weight"] * ce
            out.losses["sep_dice"] = p["sep_weight"] * dice
        return out

    def fused_decoder(self, bottleneck: torch.Tensor, skips: list[torch.Tensor], deep: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Fused logits and, if ``deep``, the deep-supervision logits (coarse to fine)."""
        if self.paper:
            return self.decoder_fuse([*skips, bottleneck], deep=deep)
        if not deep:
            return self.decoder_fuse(bottleneck, skips), []
        seen: list[torch.Tensor] = []
        handles = [blk.register_forward_hook(lambda mod, args, out: seen.append(out)) for blk in self.decoder_fuse.blocks[:-1]]
        try:
            logits = self.decoder_fuse(bottleneck, skips)
        finally:
            for h in handles:
                h.remove()
        return logits, [head(t) for head, t in zip(self.deep_heads, [bottleneck, *seen])]

    def separate_decoder(self, f: ModalityFeatures, rows: torch.Tensor) -> torch.Tensor:
        """The shared auxiliary decoder on one modality's raw conv features, for the samples ``rows``."""
        if self.paper:
            return self.decoder_sep([*(t[rows] for t in f.skips), f.bottleneck[rows]])
        return self.decoder_sep(f.bottleneck[rows], [t[rows] for t in f.skips])

    @staticmethod
    def criterion(logits: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The code's weighted CE and Dice on softmax probabilities, upsampled (trilinear, align_corners) to the target size."""
        probs = torch.softmax(logits.float(), 1)
        if probs.shape[2:] != onehot.shape[2:]:
            probs = F.interpolate(probs, size=onehot.shape[2:], mode="trilinear", align_corners=True)
        return softmax_weighted_ce(probs, onehot), batch_dice_loss(probs, onehot)

    # --- official checkpoints ---

    def official_slots(self) -> list[int]:
        """Indices into ``modalities`` of the code's FLAIR, T1c, T1, T2 (its input order)."""
        return modality_slots(self.name, self.modalities, tuple(OFFICIAL_MODALITIES.values()))

    def official_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The code's ``mmformer.Model`` state dict (``torch.load(ckpt)['state_dict']``) as this module's.

        A rename: per-modality modules by modality name, ``multimodal_transformer`` to ``inter_transformer``.
        The rest of the code's weights read its four modalities in its input order (FLAIR, T1c, T1, T2):
        the fused decoder's ``RFM1``..``RFM4`` the masked skips concatenated in that order, and
        ``multimodal_decode_conv`` the inter-modal tokens in that order, regrouped by ``view`` so that
        each voxel's channels hold consecutive tokens of one modality (at 128^3: voxels 0-127 FLAIR's,
        128-255 T1c's, ...). No permutation of weights undoes the second, so the model must concatenate
        in the code's order: built with ``fusion_order="official"`` (or given the modalities in that order).
        """
        if not self.paper or self.params["token_layout"] != "official":
            raise ValueError("mmformer: official checkpoints need backbone='paper' and token_layout='official'")
        if self.slots != self.official_slots():
            raise ValueError("mmformer: official checkpoints need the code's modality order: build with fusion_order='official'")
        index = dict(zip(OFFICIAL_MODALITIES, self.official_slots()))
        parts = (("_encoder.", "encoders"), ("_encode_conv.", "encode_convs"), ("_decode_conv.", "decode_convs"),
                 ("_transformer.", "intra_transformers"), ("_pos", "pos"))

        def ours(key: str) -> str:
            key = key.removeprefix("module.")
            for prefix in OFFICIAL_MODALITIES:
                for part, name in parts:
                    head = prefix + part
                    if key.startswith(head) and (part != "_pos" or key == head):
                        rest = key[len(head):]
                        return f"{name}.{index[prefix]}" + (f".{rest}" if rest else "")
            return key.replace("multimodal_transformer.", "inter_transformer.", 1)

        return {ours(k): v for k, v in state.items()}

