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

import re

import pytest
import torch
import torch.nn.functional as F

from conftest import MODS, tiny_batch
from missbench.core.availability import zero_inputs
from missbench.core.method import Method, build_on_meta
from missbench.core.regions import REGIONS
from missbench.core.tasks import get_task
from missbench.experiment import registry
from missbench.experiment.registry import method_class
from missbench.nets.mmformer import DecoderFuse, HybridConvEncoder, Transformer
from missbench.nets.resnet3d import SpatialInstanceNorm3d

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


# --- RFNet ---


def rfnet_to_code(state: dict[str, torch.Tensor], modalities: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """A state dict of ours (``backbone="paper"``, modalities in the code's order) as ``models.Model``'s under DataParallel."""
    level = {"up_conv": "c1", "merge": "c2", "out": "out"}

    def encoder(g: re.Match) -> str:
        return f"{CODE_NAMES[modalities[int(g[1])]]}_encoder.e{int(g[2]) + 1}"

    rules = (
        (r"encoders\.(\d)\.down\.(\d)\.", lambda g: f"{encoder(g)}_c1."),
        (r"encoders\.(\d)\.body\.(\d)\.(\d)\.", lambda g: f"{encoder(g)}_c{int(g[3]) + 2}."),
        (r"(sep|fusion)\.(up_conv|merge|out)\.(\d)\.", lambda g: f"{g[1]}.d{int(g[3]) + 1}_{level[g[2]]}."),
        (r"(sep|fusion)\.head\.", lambda g: f"{g[1]}.seg_layer."),
        (r"fusion\.prms\.(\d)\.embedding\.", lambda g: f"fusion.prm_generator{int(g[1]) + 1}.embedding_layer."),
        (r"fusion\.prms\.(\d)\.head\.", lambda g: f"fusion.prm_generator{int(g[1]) + 1}.prm_layer."),
        (r"fusion\.rfms\.(\d)\.weight_mlps\.(\d)\.", lambda g: f"fusion.RFM{int(g[1]) + 1}.modal_fusion.{g[2]}.weight_layer."),
        (r"fusion\.rfms\.(\d)\.region_fusion\.", lambda g: f"fusion.RFM{int(g[1]) + 1}.region_fusion.fusion_layer."),
        (r"fusion\.rfms\.(\d)\.short_cut\.", lambda g: f"fusion.RFM{int(g[1]) + 1}.short_cut."),
        (r"(sep|fusion)\.", lambda g: {"sep": "decoder_sep.", "fusion": "decoder_fuse."}[g[1]]),
    )
    out = {}
    for key, value in state.items():
        for pattern, replace in rules:
            key = re.sub("^" + pattern, replace, key)
        out[key] = value
    return with_module(out)


def code_rfnet(state: dict[str, torch.Tensor], x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax of the code's ``Model.forward`` in evaluation, ``x`` and ``mask`` in its order (FLAIR, T1c, T1, T2),
    transcribed with functional ops: the encoders, the features stacked in that order and masked, and at each
    scale the region map from their modality-major concatenation, the per-region modality weights (pooled
    features in that order, then the mean region probability; one output per position), the region fusion
    and the short-cut over the same concatenation."""
    st = {k.removeprefix("module."): v for k, v in state.items()}

    def unit(prefix: str, h: torch.Tensor, stride: int = 1) -> torch.Tensor:  # general_conv3d: conv (reflect) -> IN -> LeakyReLU
        w = st[prefix + ".conv.weight"]
        pad = w.shape[-1] // 2
        h = F.pad(h, (pad,) * 6, mode="reflect") if pad else h
        return F.leaky_relu(F.instance_norm(F.conv3d(h, w, st[prefix + ".conv.bias"], stride)), 0.2)

    def up2(h: torch.Tensor) -> torch.Tensor:
        return F.interpolate(h, scale_factor=2, mode="trilinear", align_corners=True)

    levels = [[] for _ in range(4)]
    for k, m in enumerate(BRAIN_ORDER):
        h = x[:, k : k + 1]
        for s in range(1, 5):
            h = unit(f"{CODE_NAMES[m]}_encoder.e{s}_c1", h, 1 if s == 1 else 2)
            h = h + unit(f"{CODE_NAMES[m]}_encoder.e{s}_c3", unit(f"{CODE_NAMES[m]}_encoder.e{s}_c2", h))
            levels[s - 1].append(h)
    keep = mask.to(x.dtype)[:, :, None, None, None, None]
    y = [torch.stack(lv, 1) * keep for lv in levels]  # B x 4 x C x ..., the code's order

    def region_map(s: int, decoder: torch.Tensor | None) -> torch.Tensor:
        p = f"decoder_fuse.prm_generator{s}."
        h = y[s - 1].flatten(1, 2)
        for j in range(3):
            h = unit(p + f"embedding_layer.{j}", h)
        h = unit(p + "prm_layer.0", h if decoder is None else torch.cat([decoder, h], 1))
        return F.conv3d(h, st[p + "prm_layer.1.weight"], st[p + "prm_layer.1.bias"]).softmax(1)

    def fuse(s: int, prm: torch.Tensor) -> torch.Tensor:
        p, ys = f"decoder_fuse.RFM{s}.", y[s - 1]
        b, k, c = ys.shape[:3]
        regions = []
        for r in range(prm.shape[1]):
            feat = ys * prm[:, None, r : r + 1]
            mean_p = prm[:, r].mean((1, 2, 3))[:, None] + 1e-7
            pooled = torch.cat([(feat.mean((3, 4, 5)) / mean_p[:, :, None]).reshape(b, k * c), mean_p], 1)
            q = p + f"modal_fusion.{r}.weight_layer."
            h = F.leaky_relu(F.linear(pooled, st[q + "0.weight"].flatten(1), st[q + "0.bias"]), 0.2)
            weight = torch.sigmoid(F.linear(h, st[q + "2.weight"].flatten(1), st[q + "2.bias"]))
            regions.append((feat * weight[:, :, None, None, None, None]).sum(1))
        h, short = torch.cat(regions, 1), ys.flatten(1, 2)
        for j in range(3):
            h, short = unit(p + f"region_fusion.fusion_layer.{j}", h), unit(p + f"short_cut.{j}", short)
        return torch.cat([h, short], 1)

    d = unit("decoder_fuse.d3_c1", up2(fuse(4, region_map(4, None))))
    for s in (3, 2, 1):
        f = fuse(s, region_map(s, d))
        d = unit(f"decoder_fuse.d{s}_out", unit(f"decoder_fuse.d{s}_c2", torch.cat([f, d], 1)))
        if s > 1:
            d = unit(f"decoder_fuse.d{s - 1}_c1", up2(d))
    return F.conv3d(d, st["decoder_fuse.seg_layer.weight"], st["decoder_fuse.seg_layer.bias"]).softmax(1)


def test_rfnet_official_checkpoint_computes_the_code_function(task):
    RFNet = method_class("rfnet")
    torch.manual_seed(0)
    source = RFNet(task, BRAIN_ORDER).double().eval()  # the code's width (16) and order
    state = rfnet_to_code(source.state_dict(), BRAIN_ORDER)
    model = RFNet(task, MODS).double().eval()
    mapped = model.official_state_dict(state)
    model.load_state_dict(mapped, strict=True)
    x = inputs(16, torch.float64)  # 16^3: the deepest scale 2^3
    x_code, mask_code = code_order(x, BRAIN_ORDER), code_order(AVAILABLE, BRAIN_ORDER)
    with torch.no_grad():
        reference = code_rfnet(state, x_code, mask_code)
        torch.testing.assert_close(source(x_code, mask_code).logits.softmax(1), reference, atol=1e-12, rtol=0)
        torch.testing.assert_close(model(x, AVAILABLE).logits.softmax(1), reference, atol=1e-12, rtol=0)
    # Reordered: exactly the weights that read or write the modalities by position; renamed only, another function.
    plain = {k: v for key, v in state.items() for k in model.official_state_dict({key: v})}
    reordered = {f"fusion.{part}" for s in range(4) for part in (
        f"prms.{s}.embedding.0.conv.weight", f"rfms.{s}.short_cut.0.conv.weight",
        *(f"rfms.{s}.weight_mlps.{r}.{w}" for r in range(4) for w in ("0.weight", "2.weight", "2.bias")))}
    assert {k for k in mapped if not torch.equal(mapped[k], plain[k])} == reordered
    model.load_state_dict(plain, strict=True)
    with torch.no_grad():
        assert (model(x, AVAILABLE).logits.softmax(1) - reference).abs().max() > 1e-3


# --- ShaSpec (backbone="official") ---

SHASPEC_ORDER = ("FLAIR", "T1", "T1c", "T2")
SHASPEC_REGIONS = ("ET", "WT", "TC")


def shaspec_to_code(state: dict[str, torch.Tensor], modalities: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """A state dict of ours (``backbone="official"``, modalities in the code's order, outputs ET, TC, WT) as
    ``DualNet_SS``'s under DataParallel (outputs ET, WT, TC)."""
    rules = (
        (r"shared\.", "shared_enc."),
        (r"specific\.(\d)\.", lambda g: f"{CODE_NAMES[modalities[int(g[1])]]}_enc."),
        (r"(\w+_enc)\.stem\.0\.", r"\1.backbone.conv1."),
        (r"(\w+_enc)\.stem\.1\.", r"\1.backbone.norm1."),
        (r"(\w+_enc)\.(layer\d\.\d+)\.shortcut\.", r"\1.backbone.\2.downsample."),
        (r"(\w+_enc)\.layer", r"\1.backbone.layer"),
        (r"(\w+_enc)\.reduce\.", r"\1.asppreduce."),
        (r"(\w+_enc)\.aspp\.dilated\.(\d)\.", lambda g: f"{g[1]}.aspp.branch{int(g[2]) + 2}."),
        (r"(\w+_enc)\.aspp\.global_branch\.(conv|norm)\.", r"\1.aspp.branch5_\2."),
        (r"(\w+_enc)\.aspp\.project\.", r"\1.aspp.conv_cat."),
        (r"decoder\.ups\.(\d)\.", lambda g: f"shared_dec.transposeconv_stage{3 - int(g[1])}."),
        (r"decoder\.skip_projs\.(\d)\.", lambda g: f"shared_dec.shortcut_conv{3 - int(g[1])}."),
        (r"decoder\.stages\.(\d)\.", lambda g: f"shared_dec.stage{3 - int(g[1])}_de."),
        (r"decoder\.cls_conv\.", "shared_dec.cls_conv.0."),
        (r"proj\.", "compos_layer.conv."),
        (r"dco_head\.", "dom_classifier."),
    )
    out = {}
    for key, value in state.items():
        for pattern, replace in rules:
            key = re.sub("^" + pattern, replace, key)
        if key == "shared_dec.cls_conv.0.weight":
            value = value[[REGIONS.index(r) for r in SHASPEC_REGIONS]]
        out[key] = value
    return with_module(out)


def code_shaspec_fusion(state: dict[str, torch.Tensor], features: list, mode: list[list[int]]) -> torch.Tensor:
    """Logits of the code's ``DualNet_SS.forward`` (channels ET, WT, TC) from the per-modality encoder outputs
    (``features`` in the code's order, as `ShaSpec.encode` gives them; the encoders are position-free), sample by
    sample with its ``mode`` (available modality indices, in the code's order), transcribed: residual fusion,
    a missing modality filled with the first available one's shared feature, the fused maps and the shared
    skips concatenated in the code's order, ``U_Res3D_dec``."""
    st = {k.removeprefix("module."): v for k, v in state.items()}

    def ws(w: torch.Tensor) -> torch.Tensor:  # Conv3d_wd's kernel
        w = w - w.mean((1, 2, 3, 4), keepdim=True)
        return w / torch.sqrt(w.flatten(1).var(1) + 1e-12).view(-1, 1, 1, 1, 1)

    def norm_act(prefix: str, h: torch.Tensor, act: bool = True) -> torch.Tensor:
        h = F.instance_norm(h, weight=st[prefix + ".weight"], bias=st[prefix + ".bias"])
        return F.leaky_relu(h, 0.01) if act else h

    def block(prefix: str, h: torch.Tensor) -> torch.Tensor:  # Res50.BasicBlock
        y = norm_act(prefix + ".norm1", F.conv3d(h, ws(st[prefix + ".conv1.weight"]), padding=1))
        y = norm_act(prefix + ".norm2", F.conv3d(y, ws(st[prefix + ".conv2.weight"]), padding=1), act=False)
        return F.leaky_relu(y + h, 0.01)

    logits = []
    for b, available in enumerate(mode):
        shared = [f[0].bottleneck[b : b + 1] for f in features]
        fused = [shared[k] + F.conv3d(torch.cat([shared[k], f[1].bottleneck[b : b + 1]], 1), ws(st["compos_layer.conv.weight"]), padding=1)
                 if k in available else shared[available[0]] for k, f in enumerate(features)]
        h = torch.cat(fused, 1)
        for stage in (3, 2, 1, 0):
            skip = torch.cat([f[0].skips[stage][b : b + 1] for f in features], 1)
            p = f"shared_dec.shortcut_conv{stage}"
            h = F.conv_transpose3d(h, st[f"shared_dec.transposeconv_stage{stage}.weight"], stride=2)
            h = block(f"shared_dec.stage{stage}_de", h + norm_act(p + ".1", F.conv3d(skip, ws(st[p + ".0.weight"]))))
        h = F.conv3d(h, st["shared_dec.cls_conv.0.weight"])
        logits.append(F.interpolate(h, scale_factor=(1, 2, 2), mode="trilinear", align_corners=False))
    return torch.cat(logits)


@pytest.mark.slow
def test_shaspec_official_checkpoint_computes_the_code_function(task):
    """At the official backbone's size (it has no width parameter; 187.7M parameters), float32, on the smallest
    patch its decoder divides exactly with two voxels at layer4 (16 x 32 x 64)."""
    ShaSpec = method_class("shaspec")
    torch.manual_seed(0)
    source = ShaSpec(task, SHASPEC_ORDER, backbone="official", fill="first").eval()
    for m in source.modules():  # instance norms start at gamma 1, beta 0: make them count
        if isinstance(m, (torch.nn.InstanceNorm3d, SpatialInstanceNorm3d)):
            torch.nn.init.normal_(m.weight, 1.0, 0.1)
            torch.nn.init.normal_(m.bias, 0.0, 0.1)
    state = shaspec_to_code(source.state_dict(), SHASPEC_ORDER)
    model = ShaSpec(task, MODS, backbone="official", fill="first").eval()
    model.load_state_dict(model.official_state_dict(state), strict=True)
    x, _ = tiny_batch(batch=len(AVAILABLE), size=16)
    x = zero_inputs(F.interpolate(x, size=(16, 32, 64)), AVAILABLE)
    with torch.no_grad():
        features = source.encode(code_order(x, SHASPEC_ORDER))
        mode = [[SHASPEC_ORDER.index(MODS[i]) for i in row.nonzero().flatten().tolist()] for row in AVAILABLE]
        reference = code_shaspec_fusion(state, features, mode)[:, [SHASPEC_REGIONS.index(r) for r in REGIONS]]
        out = model(x, AVAILABLE).logits
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)
    assert (out[:, 1] - out[:, 2]).abs().max() > 1e-2  # TC and WT told apart, so their order is checked


def test_shaspec_official_weights_follow_modality_names(task):
    """In another modality order, per-modality encoders go by name and position-bound weights are reordered."""
    order = ("T2", "T1c", "FLAIR", "T1")
    model = build_on_meta(method_class("shaspec"), task, order, backbone="official")
    code = {m: float(k) for k, m in enumerate(SHASPEC_ORDER)}  # each block holds its code position
    blocks = torch.tensor([code[m] for m in SHASPEC_ORDER])
    state = with_module({
        "dom_classifier.weight": blocks[:, None].expand(4, 3), "dom_classifier.bias": blocks,
        "shared_dec.transposeconv_stage3.weight": blocks.repeat_interleave(2)[:, None, None, None, None],
        "shared_dec.shortcut_conv1.0.weight": blocks.repeat_interleave(2)[None, :, None, None, None],
        "t1ce_enc.backbone.layer2.0.downsample.1.bias": torch.zeros(1),
        "shared_dec.cls_conv.0.weight": torch.arange(3.0)[:, None, None, None, None],
    })
    mapped = model.official_state_dict(state)
    expected = torch.tensor([code[m] for m in order])
    assert torch.equal(mapped["dco_head.bias"], expected) and torch.equal(mapped["dco_head.weight"][:, 0], expected)
    assert torch.equal(mapped["decoder.ups.0.weight"].flatten(), expected.repeat_interleave(2))
    assert torch.equal(mapped["decoder.skip_projs.2.0.weight"].flatten(), expected.repeat_interleave(2))
    assert "specific.1.layer2.0.shortcut.1.bias" in mapped
    assert mapped["decoder.cls_conv.weight"].flatten().tolist() == [SHASPEC_REGIONS.index(r) for r in REGIONS]


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
    ("rfnet", dict(backbone="common"), "backbone='paper'"),
    ("shaspec", dict(), "backbone='official'"),
    ("shaspec", dict(backbone="official", dao="kl"), "dao='l1'"),
])
def test_models_the_official_code_has_no_checkpoints_of_are_refused(task, name, params, match):
    with pytest.raises(ValueError, match=match):
        build_on_meta(method_class(name), task, MODS, **params).official_state_dict({})
