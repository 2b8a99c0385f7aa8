"""RFNet's official checkpoint layout (github.com/dyh127/RFNet at 1e475fa5de4ac3f41f8de3d3102bb8b28383c2c4,
models.py ``Model``) read into the blocks of missbench/nets/rfnet.py, for methods built on RFNet's code
whose checkpoints keep its layout: RFNet, GSS (its models.py and layers.py are RFNet's, file for file) and the
separate decoder M2FTrans shares with RFNet.

The code's input channels are FLAIR, T1ce, T1, T2 (preprocess.py). Keys are renamed (encoders by modality
name, ``e{s}_c1`` to ``down.{s-1}``, ``e{s}_c2``/``_c3`` to ``body.{s-1}.0``/``.1``, decoder level ``d{s}`` to index
s - 1, ``prm_generator{s}`` / ``RFM{s}`` to ``prms.{s-1}`` / ``rfms.{s-1}``), and the weights that read or write
the modalities by position are reordered to the data set's order: at each scale the first conv of the
region-map embedding and of the RFM's short-cut (masked features concatenated modality by modality), and per
region the modality-weight MLP (pooled features in, then the mean region probability; one weight per
modality out).
"""

from __future__ import annotations

import re

import torch

from missbench.core.method import modality_slots, permute_blocks

#: The code's modality prefixes in the order of its input channels, and the data set names they stand for.
CODE_MODALITIES = {"flair": "FLAIR", "t1ce": "T1c", "t1": "T1", "t2": "T2"}
_LEVEL = {"c1": "up_conv", "c2": "merge", "out": "out"}


def decoder_key(rest: str) -> str:
    """A key of the code's ``Decoder_sep`` / ``Decoder_fuse`` levels (after the decoder's prefix) as `SepDecoder`'s
    / `FusionDecoder`'s: ``d{s}_c1`` -> ``up_conv.{s-1}``, ``_c2`` -> ``merge``, ``_out`` -> ``out``, ``seg_layer`` -> ``head``."""
    rest = re.sub(r"^d(\d)_(c1|c2|out)\.", lambda g: f"{_LEVEL[g[2]]}.{int(g[1]) - 1}.", rest)
    return re.sub(r"^seg_layer\.", "head.", rest)


def rfnet_state_dict(state: dict[str, torch.Tensor], method: str, modalities: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """A state dict of the code's ``models.Model`` (``module.`` prefixes allowed) as that of a module holding
    ``encoders`` (`RFNetEncoder`, in ``modalities`` order), ``fusion`` (`FusionDecoder`) and ``sep`` (`SepDecoder`)."""
    slots = modality_slots(method, modalities, tuple(CODE_MODALITIES.values()))
    index = dict(zip(CODE_MODALITIES, slots))
    order = [slots.index(i) for i in range(len(modalities))]  # our modality i is the code's order[i]
    names = "|".join(CODE_MODALITIES)
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        g = re.match(rf"^({names})_encoder\.e(\d)_c([123])\.(.*)$", key)
        if g:
            s, c = int(g[2]) - 1, int(g[3])
            key = f"encoders.{index[g[1]]}." + (f"down.{s}." if c == 1 else f"body.{s}.{c - 2}.") + g[4]
        elif key.startswith("decoder_sep."):
            key = "sep." + decoder_key(key.removeprefix("decoder_sep."))
        elif key.startswith("decoder_fuse."):
            rest = decoder_key(key.removeprefix("decoder_fuse."))
            rest = re.sub(r"^prm_generator(\d)\.embedding_layer\.", lambda g: f"prms.{int(g[1]) - 1}.embedding.", rest)
            rest = re.sub(r"^prm_generator(\d)\.prm_layer\.", lambda g: f"prms.{int(g[1]) - 1}.head.", rest)
            rest = re.sub(r"^RFM(\d)\.modal_fusion\.(\d+)\.weight_layer\.", lambda g: f"rfms.{int(g[1]) - 1}.weight_mlps.{g[2]}.", rest)
            rest = re.sub(r"^RFM(\d)\.region_fusion\.fusion_layer\.", lambda g: f"rfms.{int(g[1]) - 1}.region_fusion.", rest)
            rest = re.sub(r"^RFM(\d)\.short_cut\.", lambda g: f"rfms.{int(g[1]) - 1}.short_cut.", rest)
            key = "fusion." + rest
        if re.fullmatch(r"fusion\.(prms\.\d+\.embedding|rfms\.\d+\.short_cut)\.0\.conv\.weight", key):
            value = permute_blocks(value, 1, order)
        elif re.fullmatch(r"fusion\.rfms\.\d+\.weight_mlps\.\d+\.0\.weight", key):
            value = torch.cat([permute_blocks(value[:, :-1], 1, order), value[:, -1:]], 1)
        elif re.fullmatch(r"fusion\.rfms\.\d+\.weight_mlps\.\d+\.2\.(weight|bias)", key):
            value = permute_blocks(value, 0, order)
        out[key] = value
    return out
