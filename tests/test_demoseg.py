"""DeMoSeg (methods/demoseg.py): feature decoupling, CSSA and RCR on an nnU-Net.

Parity: tests/data/parity_demoseg.json holds what the official code (github.com/kk42yy/DeMoSeg at the commit it
records, DeMoSeg/training/network/DeMoSeg.py and CSA_CSABlock.py; MONAI's DiceCELoss for the trainer's loss)
computes in float64 on seeded weights and inputs at a small size (scripts/official_parity_2024.py writes it from a
checkout); here the same weights load through ``official_state_dict`` and the outputs of every decoder level,
the fused stem map, the distillation term and the deep-supervision loss are compared. RCR and the distillation
pairs are also compared, case by case, with a transcription of the code's 15-case tables.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from conftest import CHECKOUT, MODS, assert_shared_encoding_matches, tiny_batch
from missbench.core.availability import zero_inputs
from missbench.engine import contract
from missbench.core.method import build_on_meta, count_parameters
from missbench.core.subsets import all_subsets
from missbench.experiment.registry import method_class
from missbench.nets.demoseg import CSA, SLOTS, deep_supervision_weights, dice_ce, kl_mean, rcr, rcr_distillation

DeMoSeg = method_class("demoseg")
TINY = dict(width=8, max_width=32, pools=3)
SPEC = importlib.util.spec_from_file_location("official_parity_2024", CHECKOUT / "scripts" / "official_parity_2024.py")
parity = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(parity)

#: The code's ``feature_chosen`` (CSA_CSABlock.py), transcribed: per missing-modality case (its index; availability
#: in parity.DEMOSEG_CASES, order T1, T1ce, T2, FLAIR), the (modality, quarter) filling each slot T1, T1c, T2, FLAIR.
FEATURE_CHOSEN = {
    0: [("T1", 0), ("T1", 1), ("T1", 2), ("T1", 3)], 1: [("T1c", 1), ("T1c", 0), ("T1c", 3), ("T1c", 2)],
    2: [("T2", 2), ("T2", 3), ("T2", 0), ("T2", 1)], 3: [("FLAIR", 3), ("FLAIR", 2), ("FLAIR", 1), ("FLAIR", 0)],
    4: [("T1", 0), ("T1c", 0), ("T1", 2), ("T1c", 2)], 5: [("T1", 0), ("T1", 1), ("T2", 0), ("T2", 1)],
    6: [("T1", 0), ("T1", 1), ("FLAIR", 1), ("FLAIR", 0)], 7: [("T1c", 1), ("T1c", 0), ("T2", 0), ("T2", 1)],
    8: [("T1c", 1), ("T1c", 0), ("FLAIR", 1), ("FLAIR", 0)], 9: [("T2", 2), ("FLAIR", 2), ("T2", 0), ("FLAIR", 0)],
    10: [("T1", 0), ("T1c", 0), ("T2", 0), ("T2", 1)], 11: [("T1", 0), ("T1c", 0), ("FLAIR", 1), ("FLAIR", 0)],
    12: [("T1", 0), ("T1", 1), ("T2", 0), ("FLAIR", 0)], 13: [("T1c", 1), ("T1c", 0), ("T2", 0), ("FLAIR", 0)],
    14: [("T1", 0), ("T1c", 0), ("T2", 0), ("FLAIR", 0)],
}
#: The code's ``missing_klloss``, transcribed: per case, its (student, student quarter, teacher) terms.
KL_TERMS = {
    4: [("T1", 1, "T1c"), ("T1c", 1, "T1")], 5: [("T1", 2, "T2"), ("T2", 2, "T1")], 6: [("T1", 3, "FLAIR"), ("FLAIR", 3, "T1")],
    7: [("T1c", 3, "T2"), ("T2", 3, "T1c")], 8: [("T1c", 2, "FLAIR"), ("FLAIR", 2, "T1c")], 9: [("T2", 1, "FLAIR"), ("FLAIR", 1, "T2")],
    10: [("T1", 1, "T1c"), ("T1", 2, "T2"), ("T1c", 1, "T1"), ("T1c", 3, "T2"), ("T2", 2, "T1"), ("T2", 3, "T1c")],
    11: [("T1", 1, "T1c"), ("T1", 3, "FLAIR"), ("T1c", 1, "T1"), ("T1c", 2, "FLAIR"), ("FLAIR", 2, "T1c"), ("FLAIR", 3, "T1")],
    12: [("T1", 2, "T2"), ("T1", 3, "FLAIR"), ("T2", 1, "FLAIR"), ("T2", 2, "T1"), ("FLAIR", 1, "T2"), ("FLAIR", 3, "T1")],
    13: [("T1c", 2, "FLAIR"), ("T1c", 3, "T2"), ("T2", 1, "FLAIR"), ("T2", 3, "T1c"), ("FLAIR", 1, "T2"), ("FLAIR", 2, "T1c")],
    14: [("T1", 1, "T1c"), ("T1", 2, "T2"), ("T1", 3, "FLAIR"), ("T1c", 1, "T1"), ("T1c", 2, "FLAIR"), ("T1c", 3, "T2"),
         ("T2", 1, "FLAIR"), ("T2", 2, "T1"), ("T2", 3, "T1c"), ("FLAIR", 1, "T2"), ("FLAIR", 2, "T1c"), ("FLAIR", 3, "T1")],
}


def make(task, **params):
    torch.manual_seed(0)
    return DeMoSeg(task, MODS, **{**TINY, **params}).eval()


def data_availability(case: int) -> list[bool]:
    code = dict(zip(SLOTS, parity.DEMOSEG_CASES[case]))
    return [bool(code[m]) for m in MODS]


def test_parameter_count_is_the_codes(task):
    """DeMoSeg(input_channels=4, base_num_features=32, num_classes=4, num_pool=5) of the code, built from a checkout at
    73cd4bb and counted with sum(p.numel() for p in model.parameters() if p.requires_grad): 31,527,192."""
    net = build_on_meta(DeMoSeg, task, MODS).net
    assert count_parameters(net) == 31_527_192
    assert count_parameters(net.conv_blocks_context) == 14_260_208 and count_parameters(net.conv_blocks_localization) == 15_445_160
    assert count_parameters(net.tu) == 1_818_624 and count_parameters(net.seg_outputs) == 3_200


def test_rcr_is_the_codes_table_for_all_15_cases():
    torch.manual_seed(0)
    features = torch.randn(1, 4, 8, 3, 3, 3)  # data order FLAIR, T1, T1c, T2; quarters of 2 channels
    for case, slots in FEATURE_CHOSEN.items():
        expected = torch.cat([features[:, MODS.index(m), 2 * q : 2 * q + 2] for m, q in slots], 1)
        got = rcr(features, torch.tensor([data_availability(case)]), MODS)
        assert torch.equal(got, expected), case


def test_distillation_pairs_are_the_codes_for_all_15_cases():
    torch.manual_seed(0)
    pre = torch.randn(1, 4, 8, 3, 3, 3, dtype=torch.float64)
    for case in range(15):
        terms = KL_TERMS.get(case, [])  # single modalities: none
        expected = sum((kl_mean(pre[:, MODS.index(s), 2 * q : 2 * q + 2], pre[:, MODS.index(t), :2]) for s, q, t in terms),
                       torch.zeros((), dtype=torch.float64))
        torch.testing.assert_close(rcr_distillation(pre, torch.tensor([data_availability(case)]), MODS), expected, atol=1e-15, rtol=0)


def test_csa_adds_the_permuted_map_and_its_score_gets_no_gradient():
    torch.manual_seed(0)
    csa = CSA(8, small_first=True)
    x = torch.randn(2, 8, 4, 4, 4, requires_grad=True)
    out = csa(x)
    h = csa.lrelu(csa.innorm(csa.inconv(x)))
    order = torch.argsort(csa.ch_order(h.mean((2, 3, 4))), descending=False)
    torch.testing.assert_close(out, torch.stack([h[b] + h[b][order[b]] for b in range(2)]))
    out.sum().backward()
    assert all(p.grad is None for p in csa.ch_order.parameters()) and csa.inconv.weight.grad is not None


def test_forward_every_pattern_and_missing_inputs_change_nothing(task):
    model = make(task)
    x, _ = tiny_batch(batch=1)
    for s in all_subsets(MODS):
        available = torch.tensor([s.mask])
        with torch.no_grad():
            out = model(zero_inputs(x, available), available)
        assert out.logits.shape == (1, 4, 16, 16, 16) and not out.losses
    x, _ = tiny_batch()
    available = torch.tensor([[True, False, True, False], [False, True, True, True]])
    other = x.clone()
    other[~available] = torch.randn_like(other[~available]) * 5
    with torch.no_grad():
        torch.testing.assert_close(model(zero_inputs(x, available), available).logits, model(other, available).logits)
    assert_shared_encoding_matches(model, atol=1e-5, rtol=0)
    # Five poolings of a 16^3 patch (bottleneck 1^3, the paper's depth): the one-voxel maps are defined.
    deep = make(task, width=4, max_width=16, pools=5)
    with torch.no_grad():
        assert torch.isfinite(deep(x, available).logits).all()


def test_losses(task):
    model = make(task).train()
    x, y = tiny_batch()
    available = torch.tensor([[True, True, False, False], [False, False, True, False]])
    out = model(zero_inputs(x, available), available, y)
    assert set(out.losses) == {"ds_dice", "ds_ce", "kd"} and all(torch.isfinite(v) and v > 0 for v in out.losses.values())
    assert deep_supervision_weights(5) == pytest.approx([1 / 1.875, 0.5 / 1.875, 0.25 / 1.875, 0.125 / 1.875, 0.0])
    assert "kd" not in make(task, kd_weight=0.0)(x, available, y).losses
    # dice_ce: MONAI's formula, directly.
    logits = torch.randn(2, 4, 3, 3, 3, dtype=torch.float64)
    index = torch.randint(0, 4, (2, 3, 3, 3))
    p, t = logits.softmax(1), torch.nn.functional.one_hot(index, 4).movedim(-1, 1).double()
    dice = torch.stack([1 - (2 * (p[b, c] * t[b, c]).sum() + 1e-5) / (p[b, c].sum() + t[b, c].sum() + 1e-5)
                        for b in range(2) for c in range(1, 4)]).mean()
    got = dice_ce(logits, index)
    torch.testing.assert_close(got[0], dice)
    torch.testing.assert_close(got[1], torch.nn.functional.cross_entropy(logits, index))


def test_loss_falls_on_a_toy_problem(task):
    model = make(task).train()
    x, y = tiny_batch(size=16)
    x[:, 0] += 3 * (y > 0)
    available = torch.ones(2, 4, dtype=torch.bool)
    # the engine's training step, as `bench.py check` runs it (missbench.engine.contract.toy_training)
    losses = [h["total"] for h in contract.toy_training(model, x, y, lambda step: available, 20, stages=False, lr=1e-2)]
    assert losses[-1] < 0.7 * losses[0]


# --- parity with the official code, and its checkpoints ---


@pytest.fixture(scope="module")
def recorded():
    return json.loads((CHECKOUT / "tests" / "data" / "parity_demoseg.json").read_text())


def close(t: torch.Tensor, expected: dict, atol: float = 1e-12) -> None:
    got = parity.fingerprint(t)
    assert got["shape"] == expected["shape"]
    assert max(abs(a - b) for a, b in zip(got["samples"], expected["samples"])) <= atol
    assert got["sum"] == pytest.approx(expected["sum"], abs=atol * 100) and got["abs_sum"] == pytest.approx(expected["abs_sum"], abs=atol * 100)


def test_outputs_and_losses_are_the_codes(task, recorded):
    assert recorded["commit"] == "73cd4bbdcb3ec0c6fd352eb3c1811d5d2277503f"
    model = DeMoSeg(task, MODS, **recorded["config"]["ours"]).double().eval()
    model.load_state_dict(model.official_state_dict(parity.fill([(k, s) for k, s in recorded["keys"]])), strict=True)
    x, labels = parity.inputs(recorded["config"]["size"])
    available = parity.available()
    assert recorded["cases"] == [parity.DEMOSEG_CASES.index(row) for row in parity.code_order(available, SLOTS).int().tolist()]
    with torch.no_grad():
        features = model.encode(x)
        fused = rcr(torch.stack([f[1] for f in features], 1), available, MODS)
        outs = model.net(fused)
        out = model(x, available, labels)
    for b in range(len(available)):
        for k, t in enumerate(outs):
            close(t[b : b + 1], recorded["outputs"][f"sample{b}_out{k}"])
    close(fused, recorded["outputs"]["rcr"])
    assert float(out.losses["kd"]) == pytest.approx(recorded["losses"]["kd"], rel=1e-12)
    # The trainer's loss per sample (MONAI's DiceCELoss), summed over the samples: the batch's mean times 4.
    assert float(out.losses["ds_dice"] + out.losses["ds_ce"]) * 4 == pytest.approx(recorded["losses"]["ds_per_sample_sum"], rel=1e-9)


def test_loader_renames_the_stems_by_modality_name(task, recorded):
    state = parity.fill([(k, s) for k, s in recorded["keys"]])
    model = DeMoSeg(task, ("T2", "T1c", "FLAIR", "T1"), **recorded["config"]["ours"])
    mapped = model.official_state_dict({"module." + k: v for k, v in state.items()})
    assert torch.equal(mapped["net.conv_blocks_context.0.convs.2.conv.weight"], state["conv_blocks_context.0.t2flare_conv.conv.weight"])
    assert torch.equal(mapped["net.conv_blocks_context.0.csas.3.conv.inconv.weight"], state["conv_blocks_context.0.t1_csa.conv.inconv.weight"])
    model.load_state_dict(mapped, strict=True)
    assert model.net.stem.csas[3].conv.sort_small_first and not model.net.stem.csas[0].conv.sort_small_first  # T1's, by name


def test_bad_parameters_are_refused(task):
    with pytest.raises(ValueError, match="multiple of 4"):
        DeMoSeg(task, MODS, width=6)
    with pytest.raises(ValueError, match="official code's modalities"):
        DeMoSeg(task, ("A", "B", "C", "D"))
    with pytest.raises(ValueError, match="pools"):
        DeMoSeg(task, MODS, pools=0)
