import pytest
import torch

from conftest import MODS, assert_shared_encoding_matches, tiny_batch
from missbench.core.availability import zero_inputs
from missbench.core.method import count_parameters
from missbench.nets.mmformer import resize_positions
from missbench.experiment.registry import method_class
from missbench.core.subsets import all_subsets

MMFormer = method_class("mmformer")
# Tiny sizes for speed; the mechanism (masking, token grid, both transformers, all decoders) is the paper's.
TINY = {"paper": dict(width=4, dim=16, mlp_dim=32, heads=2), "common": dict(backbone="common", width=4, depth=2, dim=16, mlp_dim=32, heads=2)}


def make(task, backbone="paper", **params):
    torch.manual_seed(0)
    return MMFormer(task, MODS, **{**TINY[backbone], **params}).eval()


def test_official_size_has_the_code_parameter_count(task):
    model = MMFormer(task, MODS)
    # mmformer.Model(num_cls=4) of the code counts 36,654,416 (36.65M), its unused decode convs included.
    assert count_parameters(model) == 36_654_416
    assert count_parameters(model) - sum(p.numel() for p in model.decode_convs.parameters()) == 36_391_760
    assert model.pos[0].shape == (1, 512, 512)  # the code's 8^3 tokens of 512 dims
    assert count_parameters(MMFormer(task, MODS, backbone="common")) == 29_083_092


@pytest.mark.parametrize("backbone", ["paper", "common"])
def test_forward_with_every_availability_pattern(task, backbone):
    model = make(task, backbone)
    x, _ = tiny_batch(batch=1)
    for s in all_subsets(MODS):
        available = torch.tensor([s.mask])
        with torch.no_grad():
            out = model(zero_inputs(x, available), available)
        assert out.logits.shape == (1, 4, 16, 16, 16) and torch.isfinite(out.logits).all()
        assert out.losses == {}


@pytest.mark.parametrize("backbone", ["paper", "common"])
def test_missing_input_cannot_change_the_output(task, backbone):
    model = make(task, backbone)
    x, _ = tiny_batch()
    available = torch.tensor([[True, False, True, False], [False, False, False, True]])
    other = x.clone()
    other[~available] = torch.randn_like(other[~available]) * 5
    with torch.no_grad():
        a = model(zero_inputs(x, available), available).logits
        # Masking is on features (the code's MaskModal): even an unzeroed missing input changes nothing.
        b = model(other, available).logits
    torch.testing.assert_close(a, b)


def test_masking_and_inter_modal_tokens_match_a_direct_computation(task):
    model = make(task, dropout=0.0)
    x, _ = tiny_batch(size=32)  # token grid 2^3, positions resampled from the stored 8^3
    available = torch.tensor([[True, False, True, True], [False, True, False, False]])
    seen = {}
    model.multimodal_decode_conv.register_forward_pre_hook(lambda mod, args: seen.update(inter=args[0]))
    model.decoder_fuse.register_forward_pre_hook(lambda mod, args: seen.update(maps=args[0]))
    with torch.no_grad():
        feats = model.encode(x)
        model.decode(feats, available)
        b, m, n, d = 2, 4, 8, 16
        keep = available.float().view(b, m, 1, 1)
        tokens = torch.stack([f.tokens for f in feats], 1) * keep
        pos = torch.cat([resize_positions(model.pos[i], (8, 8, 8), (2, 2, 2)) for i in range(m)], 1)
        expected = model.inter_transformer(tokens.reshape(b, m * n, d), pos)
    # The code's reshape: the (B, M*N, dim) sequence viewed as (B, 2, 2, 2, M*dim).
    torch.testing.assert_close(seen["inter"], expected.reshape(b, 2, 2, 2, m * d).permute(0, 4, 1, 2, 3))
    for k in range(4):  # skips: missing modalities zeroed, then concatenated
        got = seen["maps"][k].view(b, m, -1, *seen["maps"][k].shape[2:])
        for i in range(b):
            for j in range(m):
                want = feats[j].skips[k][i] if available[i, j] else torch.zeros_like(feats[j].skips[k][i])
                torch.testing.assert_close(got[i, j], want)


def test_positions_follow_the_token_grid(task):
    model = make(task)
    table = torch.randn(1, 512, 3)
    assert resize_positions(table, (8, 8, 8), (8, 8, 8)) is table  # 128^3: the code's table as is
    small = resize_positions(table, (8, 8, 8), (1, 2, 4))
    assert small.shape == (1, 8, 3)
    # A constant table stays constant under resampling.
    torch.testing.assert_close(resize_positions(torch.ones(1, 512, 3), (8, 8, 8), (2, 3, 5)), torch.ones(1, 30, 3))
    x = torch.randn(1, 4, 16, 32, 48)  # anisotropic patch: grid 1 x 2 x 3
    with torch.no_grad():
        assert model(x, torch.ones(1, 4, dtype=torch.bool)).logits.shape == (1, 4, 16, 32, 48)
    with pytest.raises(ValueError, match="multiple of 16"):
        model.encode(torch.zeros(1, 4, 24, 24, 24))


@pytest.mark.parametrize("backbone", ["paper", "common"])
def test_shared_encoding_equals_one_pass_per_subset(task, backbone):
    model = make(task, backbone)
    assert_shared_encoding_matches(model, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backbone", ["paper", "common"])
def test_loss_terms_and_auxiliary_masking(task, backbone):
    model = make(task, backbone).train()
    x, y = tiny_batch()
    available = torch.tensor([[True, False, False, False], [True, False, True, False]])
    out = model(zero_inputs(x, available), available, y)
    assert set(out.losses) == {"fuse_ce", "fuse_dice", "deep_ce", "deep_dice", "sep_ce", "sep_dice"}
    assert all(torch.isfinite(v) and v >= 0 for v in out.losses.values())
    # The auxiliary decoder only sees the modalities present (FLAIR in both samples, T1c in one);
    # with aux_over="all" (the code's four decoders) it sees every modality of every sample.
    def batch_sizes(model):
        calls = []
        first = (lambda a: a[0][0]) if backbone == "paper" else (lambda a: a[0])
        handle = model.decoder_sep.register_forward_pre_hook(lambda mod, args: calls.append(first(args).shape[0]))
        model(zero_inputs(x, available), available, y)
        handle.remove()
        return calls

    assert batch_sizes(model) == [2, 1]
    assert batch_sizes(make(task, backbone, aux_over="all").train()) == [2, 2, 2, 2]
    # No auxiliary or deep terms at zero weight; evaluation computes only the fused output.
    terms = make(task, backbone, sep_weight=0, deep_weight=0).train()(x, torch.ones(2, 4, dtype=torch.bool), y).losses
    assert set(terms) == {"fuse_ce", "fuse_dice"}


@pytest.mark.parametrize("backbone", ["paper", "common"])
def test_loss_falls_on_a_toy_problem(task, backbone):
    model = make(task, backbone).train()
    x, y = tiny_batch(size=16)
    x[:, 0] += 3 * (y > 0)  # FLAIR shows the tumour
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    available = torch.tensor([[True, True, False, True], [True, False, True, False]])
    totals, fused = [], []
    for _ in range(40):
        terms = model(zero_inputs(x, available), available, y).losses
        loss = sum(terms.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        totals.append(loss.item())
        fused.append((terms["fuse_ce"] + terms["fuse_dice"]).item())
    # The deep-supervision head at 1/16 scale sees one voxel of a 16^3 patch, so the total falls slower than the fused loss.
    assert fused[-1] < 0.6 * fused[0]
    assert totals[-1] < 0.7 * totals[0]


def test_unused_official_convs_get_no_gradient(task):
    model = make(task).train()
    x, y = tiny_batch(batch=1, size=32)  # at 16^3 the one-voxel bottleneck's norm cuts e5_c2 off, rightly
    sum(model(x, torch.ones(1, 4, dtype=torch.bool), y).losses.values()).backward()
    assert all(p.grad is None for p in model.decode_convs.parameters())
    assert all(p.grad is not None for p in model.encoders.parameters())


def test_official_state_dict_keys_map_one_to_one(task):
    model = MMFormer(task, MODS, fusion_order="official", width=2, dim=8, mlp_dim=8, heads=2)
    ours = model.state_dict()
    names = {"FLAIR": "flair", "T1": "t1", "T1c": "t1ce", "T2": "t2"}
    official = {}
    for key in ours:
        k = key
        for i, mod in enumerate(MODS):
            name = names[mod]
            for mine, part in (("encoders", "_encoder"), ("encode_convs", "_encode_conv"), ("decode_convs", "_decode_conv"),
                               ("intra_transformers", "_transformer")):
                if k.startswith(f"{mine}.{i}."):
                    k = name + part + k[len(f"{mine}.{i}"):]
            if k == f"pos.{i}":
                k = f"{name}_pos"
        official["module." + k.replace("inter_transformer.", "multimodal_transformer.")] = key
    mapped = model.official_state_dict({k: ours[v] for k, v in official.items()})
    assert all(mapped[v] is ours[v] for v in official.values()) and len(mapped) == len(ours)
    model.load_state_dict(mapped, strict=True)
    with pytest.raises(ValueError, match="fusion_order='official'"):
        MMFormer(task, MODS, width=2, dim=8, mlp_dim=8, heads=2).official_state_dict(mapped)


def test_fusion_order_official_concatenates_in_the_code_order(task):
    """FLAIR, T1c, T1, T2 whatever the data set's order; with the modalities given in that order, nothing changes."""
    assert make(task, fusion_order="official").slots == [0, 2, 1, 3]
    assert MMFormer(task, ("FLAIR", "T1c", "T1", "T2"), fusion_order="data", **TINY["paper"]).slots == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="modalities"):
        MMFormer(task, ("FLAIR", "T1", "T2"), fusion_order="official", **TINY["paper"])


def test_bad_parameter_is_refused(task):
    with pytest.raises(ValueError, match="token_layout"):
        MMFormer(task, MODS, token_layout="transposed")
    with pytest.raises(ValueError, match="unknown parameter 'patch'"):
        MMFormer(task, MODS, patch=128)


def test_aligned_token_layout_runs(task):
    model = make(task, token_layout="aligned")
    x, _ = tiny_batch()
    with torch.no_grad():
        assert model(x, torch.ones(2, 4, dtype=torch.bool)).logits.shape == (2, 4, 16, 16, 16)
