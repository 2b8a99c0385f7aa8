"""Official checkpoints load through `Method.official_state_dict` and compute the official model's function.

For each method the test builds weights with the project's classes at a small size, writes them in the
official code's layout (its key names, its modality order, the ``module.`` prefix DataParallel saves) with
an inverse mapping written here, loads them through the hook into a fresh model and compares outputs for
inputs in the data set's order (FLAIR, T1, T1c, T2) under several availability patterns, one per sample,
with the official function on the same inputs in the code's order: the source model where its modalities
are in the code's order, and a transcription, written here from the official code's forward, of the part
of it that depends on the modalities' positions.

Official code read (input order in brackets):
- mmFormer: github.com/YaoZhang93/mmFormer at b18663adbfd0323656083e0470420c8c715c1782, mmformer/mmformer.py
  ``Model`` (FLAIR, T1c, T1, T2: preprocess.py stacks them so);
- RFNet: github.com/dyh127/RFNet at 1e475fa5de4ac3f41f8de3d3102bb8b28383c2c4, models.py ``Model``, layers.py
  (FLAIR, T1c, T1, T2: preprocess.py);
- ShaSpec: github.com/billhhh/ShaSpec at 081fe7a1e40d6bbc0736dc93e779a0a5a439d091, DualNet_SS.py
  ``DualNet_SS``, Res50.py (FLAIR, T1, T1c, T2: BraTSDataSet.py; outputs ET, WT, TC: ``id2trainId``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import MODS, tiny_batch
from missbench.core.availability import zero_inputs
from missbench.core.method import Method, build_on_meta
from missbench.core.tasks import get_task
from missbench.experiment import registry
from missbench.experiment.registry import method_class
from missbench.nets.mmformer import DecoderFuse, HybridConvEncoder, Transformer

#: The official prefix of each data set modality.
CODE_NAMES = {"FLAIR": "flair", "T1": "t1", "T1c": "t1ce", "T2": "t2"}
#: mmFormer's and RFNet's input order.
BRAIN_ORDER = ("FLAIR", "T1c", "T1", "T2")
#: One availability pattern per sample, in the data set's order (FLAIR, T1, T1c, T2).
AVAILABLE = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)


@pytest.fixture(scope="module")
def task():
    return get_task("segmentation")


def code_order(x: torch.Tensor, order: tuple[str, ...]) -> torch.Tensor:
    """``x`` (B x M ..., data set order) with its modality axis in ``order``."""
    return x[:, [MODS.index(m) for m in order]]


def with_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys as torch.nn.DataParallel saves them."""
    return {"module." + k: v for k, v in state.items()}


def inputs(size: int, dtype: torch.dtype) -> torch.Tensor:
    x, _ = tiny_batch(batch=len(AVAILABLE), size=size)
    return zero_inputs(x, AVAILABLE).to(dtype)


# --- mmFormer ---

MMFORMER = dict(width=8, dim=32, mlp_dim=64, heads=8, pos_grid=2)  # the code's conv widths; 32^3 -> 2^3 tokens


def mmformer_to_code(state: dict[str, torch.Tensor], modalities: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """A state dict of ours (modalities in the code's order) as ``mmformer.Model.state_dict()`` of DataParallel."""
    parts = {"encoders": "_encoder", "encode_convs": "_encode_conv", "decode_convs": "_decode_conv",
             "intra_transformers": "_transformer", "pos": "_pos"}
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in parts:
            i, _, rest = rest.partition(".")
            key = CODE_NAMES[modalities[int(i)]] + parts[head] + (f".{rest}" if rest else "")
        elif head == "inter_transformer":
            key = "multimodal_transformer." + rest
        out[key] = value
    return with_module(out)


def code_mmformer(state: dict[str, torch.Tensor], x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax of the code's ``Model.forward`` in evaluation: ``x`` and ``mask`` in its order (FLAIR, T1c, T1, T2).

    Per-modality parts with the project's blocks (position-free); transcribed: the masking of skips and
    intra-modal tokens, the skips stacked in the code's order, the tokens and positional tables concatenated
    in that order, the inter-modal output viewed as (B, grid, 4 * dim) (each voxel 4 consecutive tokens),
    ``multimodal_decode_conv`` and the fused decoder on it.
    """
    st = {k.removeprefix("module."): v for k, v in state.items()}

    def sub(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in st.items() if k.startswith(prefix)}

    def transformer(prefix: str) -> Transformer:
        t = Transformer(MMFORMER["dim"], 1, MMFORMER["heads"], MMFORMER["mlp_dim"]).to(x.dtype).eval()
        t.load_state_dict(sub(prefix))
        return t

    b, d, names = x.shape[0], MMFORMER["dim"], [CODE_NAMES[m] for m in BRAIN_ORDER]
    keep = mask.to(x.dtype)
    skips, tokens = [], []
    for k, name in enumerate(names):
        encoder = HybridConvEncoder(MMFORMER["width"]).to(x.dtype)
        encoder.load_state_dict(sub(f"{name}_encoder."))
        maps = encoder(x[:, k : k + 1])
        t = F.conv3d(maps[-1], st[f"{name}_encode_conv.weight"], st[f"{name}_encode_conv.bias"])
        grid = t.shape[2:]
        t = transformer(f"{name}_transformer.")(t.permute(0, 2, 3, 4, 1).reshape(b, -1, d), st[f"{name}_pos"])
        skips.append(maps[:-1])
        tokens.append(t * keep[:, k, None, None])
    x1, x2, x3, x4 = (torch.stack([s[i] for s in skips], 1).mul(keep[:, :, None, None, None, None]).flatten(1, 2) for i in range(4))
    pos = torch.cat([st[f"{name}_pos"] for name in names], 1)
    inter = transformer("multimodal_transformer.")(torch.cat(tokens, 1), pos)
    inter = inter.reshape(b, *grid, 4 * d).permute(0, 4, 1, 2, 3)  # each voxel: 4 consecutive tokens
    x5 = F.conv3d(inter, st["multimodal_decode_conv.weight"], st["multimodal_decode_conv.bias"])
    decoder = DecoderFuse(MMFORMER["width"], 4, 4).to(x.dtype)
    decoder.load_state_dict(sub("decoder_fuse."))
    return decoder([x1, x2, x3, x4, x5])[0].softmax(1)


@pytest.fixture(scope="module")
def mmformer_case(task):
    """(code-layout state dict, data-order inputs, the code's softmax on them) from a source model in the code's order."""
    MMFormer = method_class("mmformer")
    torch.manual_seed(0)
    source = MMFormer(task, BRAIN_ORDER, **MMFORMER)
    for p in source.pos:  # zeros at initialisation: give the positions something to carry
        torch.nn.init.normal_(p)
    source = source.double().eval()
    state = mmformer_to_code(source.state_dict(), BRAIN_ORDER)
    x = inputs(32, torch.float64)
    with torch.no_grad():
        reference = code_mmformer(state, code_order(x, BRAIN_ORDER), code_order(AVAILABLE, BRAIN_ORDER))
        by_source = source(code_order(x, BRAIN_ORDER), code_order(AVAILABLE, BRAIN_ORDER)).logits.softmax(1)
    torch.testing.assert_close(by_source, reference, atol=1e-12, rtol=0)  # our model in the code's order is the code's
    return state, x, reference


def test_mmformer_official_checkpoint_computes_the_code_function(task, mmformer_case):
    state, x, reference = mmformer_case
    model = method_class("mmformer")(task, MODS, fusion_order="official", **MMFORMER).double().eval()
    model.load_state_dict(model.official_state_dict(state), strict=True)
    with torch.no_grad():
        out = model(x, AVAILABLE).logits.softmax(1)
    torch.testing.assert_close(out, reference, atol=1e-12, rtol=0)


def test_mmformer_renaming_alone_computes_another_function(task, mmformer_case):
    """The former loader: the same renamed weights in a model that concatenates in the data set's order."""
    state, x, reference = mmformer_case
    MMFormer = method_class("mmformer")
    renamed = MMFormer(task, MODS, fusion_order="official", **MMFORMER).official_state_dict(state)
    model = MMFormer(task, MODS, **MMFORMER).double().eval()
    model.load_state_dict(renamed, strict=True)
    with torch.no_grad():
        out = model(x, AVAILABLE).logits.softmax(1)
    assert (out - reference).abs().max() > 0.1
    with pytest.raises(ValueError, match="fusion_order='official'"):
        model.official_state_dict(state)


# --- the hook ---


def test_a_method_names_the_official_code_it_loads_exactly_when_it_has_a_loader(task):
    for name in registry.method_names():
        cls = registry.method_class(name)
        assert bool(cls.official_code) == (cls.official_state_dict is not Method.official_state_dict), name
    with pytest.raises(NotImplementedError, match="'zero_fill' has no loader for official checkpoints"):
        build_on_meta(method_class("zero_fill"), task, MODS).official_state_dict({})


@pytest.mark.parametrize(("name", "params", "match"), [
    ("mmformer", dict(backbone="common"), "backbone='paper'"),
    ("mmformer", dict(token_layout="aligned", fusion_order="official"), "token_layout='official'"),
])
def test_models_the_official_code_has_no_checkpoints_of_are_refused(task, name, params, match):
    with pytest.raises(ValueError, match=match):
        build_on_meta(method_class(name), task, MODS, **params).official_state_dict({})
