"""M2FTrans (methods/m2ftrans.py): masked fusion transformer with learnable fusion tokens.

Parity: tests/data/parity_m2ftrans.json holds what the official code (github.com/Jun-Jie-Shi/M2FTrans at the
commit it records, M2FTrans_v1/models/fusiontrans.py ``Model`` and utils/criterions.py) computes in float64 on
seeded weights and inputs at a small size (scripts/official_parity_2024.py writes it from a checkout); here the same
weights load through ``official_state_dict`` and the outputs and loss terms are compared.
"""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch

from conftest import CHECKOUT, MODS, assert_shared_encoding_matches, tiny_batch
from missbench.core.availability import zero_inputs
from missbench.engine import contract
from missbench.core.method import build_on_meta, count_parameters
from missbench.core.subsets import all_subsets
from missbench.experiment.registry import method_class
from missbench.nets.m2ftrans import fusion_attention_mask, spatial_weights

M2FTrans = method_class("m2ftrans")
TINY = dict(width=2, mlp_dim=32, heads=2, expand=2)  # transformer dimension 32
SPEC = importlib.util.spec_from_file_location("official_parity_2024", CHECKOUT / "scripts" / "official_parity_2024.py")
parity = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(parity)


def make(task, **params):
    torch.manual_seed(0)
    return M2FTrans(task, MODS, **{**TINY, **params}).eval()


def test_parameter_count_is_the_codes(task):
    """fusiontrans.Model(num_cls=4) of the code, built from a checkout at 03a0b28 and counted with
    sum(p.numel() for p in model.parameters() if p.requires_grad): 45,429,660; per child module below."""
    model = build_on_meta(M2FTrans, task, MODS)
    assert count_parameters(model) == 45_429_660
    assert count_parameters(model.encoders[0]) == 5_890_944
    assert count_parameters(model.trans_bottle) == 7_094_784
    assert count_parameters(model.decoder_fusion) == 12_206_472
    assert count_parameters(model.decoder_sep) == 2_372_628
    assert model.pos.numel() == 160_000 and model.fusion.numel() == 32_000  # 5 x 5^3 and 5^3 tokens of 256 dims


def test_forward_every_pattern_and_missing_inputs_change_nothing(task):
    model = make(task)
    x, _ = tiny_batch(batch=1)
    for s in all_subsets(MODS):
        available = torch.tensor([s.mask])
        with torch.no_grad():
            out = model(zero_inputs(x, available), available)
        assert out.logits.shape == (1, 4, 16, 16, 16) and torch.isfinite(out.logits).all() and not out.losses
    x, _ = tiny_batch()
    available = torch.tensor([[True, False, True, False], [False, False, False, True]])
    other = x.clone()
    other[~available] = torch.randn_like(other[~available]) * 5
    with torch.no_grad():
        a = model(zero_inputs(x, available), available).logits
        b = model(other, available).logits  # features of missing modalities are weighted by exactly 0 and masked
        feats = model.encode(zero_inputs(x, available))
        noisy = [[f + 3 * (m in (1, 3)) for f in fm] for m, fm in enumerate(feats)]  # modalities missing in sample 0
        c = model.decode(noisy, available).logits
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[0], c[0])
    assert_shared_encoding_matches(model, atol=1e-5, rtol=0)


def test_attention_mask_and_spatial_weights():
    available = torch.tensor([[True, False, True, True]])
    allowed = fusion_attention_mask(available, 2)[0]  # 5 blocks of 2 tokens
    block = torch.arange(5).repeat_interleave(2)
    for i in range(10):
        for j in range(10):
            want = block[i] == block[j] or (block[i] == 4 and (block[j] == 4 or bool(available[0, block[j]])))
            assert bool(allowed[i, j]) == want, (i, j)
    attn = torch.softmax(torch.randn(1, 3, 10, 10).masked_fill(~allowed, float("-inf")), -1)
    w = spatial_weights(attn, 4, (2, 1, 1))
    assert w[1].abs().max() == 0 and all(t.shape == (1, 1, 2, 1, 1) for t in w)
    torch.testing.assert_close(w[0].flatten(), attn[0, :, 8:, 0:2].sum((0, 1)))
    torch.testing.assert_close(sum(t.sum() for t in w) + attn[0, :, 8:, 8:].sum(), torch.tensor(3 * 2.0))  # rows sum to 1


def test_loss_terms_and_sep_pairs(task):
    model = make(task).train()
    x, y = tiny_batch()
    available = torch.tensor([[True, False, True, False], [False, False, True, False]])
    out = model(zero_inputs(x, available), available, y)
    assert set(out.losses) == {"fuse_ce", "fuse_dice", "prm_ce", "prm_dice", "sep_ce", "sep_dice"}
    assert all(torch.isfinite(v) and v > 0 for v in out.losses.values())


def test_loss_falls_on_a_toy_problem(task):
    model = make(task, dropout=0.0).train()
    x, y = tiny_batch(size=16)
    x[:, 0] += 3 * (y > 0)
    available = torch.ones(2, 4, dtype=torch.bool)
    # the engine's training step, as `bench.py check` runs it (missbench.engine.contract.toy_training)
    losses = [h["total"] for h in contract.toy_training(model, x, y, lambda step: available, 20, stages=False, lr=1e-2)]
    assert losses[-1] < 0.8 * losses[0]


def test_positions_are_resampled_for_another_grid(task):
    model = make(task, pos_grid=5)
    x, _ = tiny_batch(size=32)  # bottleneck 2^3; the tables are stored at 5^3
    available = torch.ones(2, 4, dtype=torch.bool)
    with torch.no_grad():
        assert model(x, available).logits.shape == (2, 4, 32, 32, 32)
    assert model.table(model.pos, 5, (5, 5, 5)) is not model.pos and torch.equal(model.table(model.pos, 5, (5, 5, 5)), model.pos)


# --- parity with the official code, and its checkpoints ---


@pytest.fixture(scope="module")
def recorded():
    return json.loads((CHECKOUT / "tests" / "data" / "parity_m2ftrans.json").read_text())


def test_outputs_and_losses_are_the_codes(task, recorded):
    assert recorded["commit"] == "03a0b28ae03ad1a7dea5fb874c7b47c1439caa34"
    model = M2FTrans(task, MODS, **recorded["config"]["ours"]).double().eval()
    state = parity.fill([(k, s) for k, s in recorded["keys"]])
    model.load_state_dict(model.official_state_dict(state), strict=True)
    x, labels = parity.inputs(recorded["config"]["size"])
    available = parity.available()
    with torch.no_grad():
        out = model(x, available, labels)  # eval mode: no dropout, as the recorded run
    probs, losses = out.logits.softmax(1), out.losses
    got, expected = parity.fingerprint(probs), recorded["outputs"]["fuse_probs"]
    assert got["shape"] == expected["shape"]
    assert max(abs(a - b) for a, b in zip(got["samples"], expected["samples"])) < 1e-12
    assert got["sum"] == pytest.approx(expected["sum"], abs=1e-9) and got["abs_sum"] == pytest.approx(expected["abs_sum"], abs=1e-9)
    for name, value in recorded["losses"].items():  # the code's CE casts its log to float32
        assert float(losses[name]) == pytest.approx(value, rel=1e-6), name
    # Renamed without reordering the positional blocks and RFM1..3's first convs: another function.
    plain = {}
    for key, value in state.items():
        mapped = model.official_state_dict({key: value})
        plain.update({k: (value if k == "pos" or re.fullmatch(r"decoder_fusion\.RFM\d\.fusion_layer\.0\.conv\.weight", k) else v)
                      for k, v in mapped.items()})
    reordered = {k for k in plain if not torch.equal(plain[k], model.official_state_dict(state)[k])}
    assert reordered == {"pos", *(f"decoder_fusion.RFM{k}.fusion_layer.0.conv.weight" for k in (1, 2, 3))}
    model.load_state_dict(plain, strict=True)
    with torch.no_grad():
        assert (model(x, available).logits.softmax(1) - probs).abs().max() > 1e-3


def test_bad_parameters_are_refused(task):
    with pytest.raises(ValueError, match="heads"):
        M2FTrans(task, MODS, width=2, heads=3)
    with pytest.raises(ValueError, match="sep_over"):
        M2FTrans(task, MODS, **TINY, sep_over="some")
    with pytest.raises(ValueError, match="multiple of 16"):
        make(task).encode(torch.zeros(1, 4, 24, 24, 24))
