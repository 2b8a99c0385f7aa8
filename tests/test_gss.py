"""GSS (methods/gss.py): RFNet with the category-aware group self-support loss.

Parity: tests/data/parity_gss.json holds what the official code (github.com/qysgithubopen/GSS at the commit it
records: models_GSS.py, GSS_choice.py, random_mask.py, utils/criterions.py) computes on seeded weights and inputs
(scripts/official_parity_2024.py writes it from a checkout); here the same weights load through
``official_state_dict`` and the outputs, the soft target and every loss term are compared.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from conftest import CHECKOUT, MODS, assert_shared_encoding_matches, tiny_batch
from missbench.core.availability import zero_inputs
from missbench.engine import contract
from missbench.core.method import count_on_meta
from missbench.core.subsets import all_subsets
from missbench.experiment.registry import method_class
from missbench.nets.gss import double_leader_target, group_soft_target, random_voxel_keep, single_leader_target

GSS = method_class("gss")
SPEC = importlib.util.spec_from_file_location("official_parity_2024", CHECKOUT / "scripts" / "official_parity_2024.py")
parity = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(parity)


def make(task, **params):
    torch.manual_seed(0)
    return GSS(task, MODS, **{"width": 4, **params}).eval()


def test_parameter_count_is_rfnets(task):
    # The code's models_GSS.Model is RFNet's models.Model (8,984,960, counted in tests/test_rfnet.py); GSS adds none.
    assert count_on_meta(GSS, task, MODS) == count_on_meta(method_class("rfnet"), task, MODS) == 8_984_960


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


# --- the self-support target: a transcription of the code's functions (GSS_choice.py) ---


def code_single(p1, p2, p3, p4, s1, s2, s3, s4, t1, t2):
    """``singel_teacher`` as the code writes it: masks applied by assignment to clones, step by step."""
    s1, s2, s3, s4 = s1.clone(), s2.clone(), s3.clone(), s4.clone()
    m1 = p1 > t1
    lead = torch.where(m1, s1, 0 * s1)
    members = []
    for p, s in ((p2, s2), (p3, s3), (p4, s4)):
        members.append((torch.where(m1, 0 * p, p), torch.where(m1, s, 0 * s)))
    low = (members[0][0] > t2) & (members[1][0] > t2) & (members[2][0] > t2)
    mean = sum(torch.where(low, s, 0 * s) for _, s in members) / 3
    for s in (s1, s2, s3, s4):
        s[m1] = 0
        s[low] = 0
    return lead + mean + torch.cat([s1, s2, s3, s4], 1).amin(1, keepdim=True)


def code_double(p1, p2, p3, p4, s1, s2, s3, s4, t1, t2, pp):
    """``double_teacher`` as the code writes it."""
    s1, s2, s3, s4 = s1.clone(), s2.clone(), s3.clone(), s4.clone()
    m1, m2 = p1 > t1, p2 > t1
    dom, both = m1 | m2, m1 & m2
    d1 = torch.cat([torch.where(both, s1, 0 * s1), torch.where(both, s2, 0 * s2)], 1).amax(1, keepdim=True)
    a, b = torch.where(dom, s1, 0 * s1), torch.where(dom, s2, 0 * s2)
    hi, lo = torch.cat([a, b], 1).amax(1, keepdim=True), torch.cat([a, b], 1).amin(1, keepdim=True)
    d2 = hi - pp * (hi - lo)
    low = (torch.where(dom, 0 * p3, p3) > t2) & (torch.where(dom, 0 * p4, p4) > t2)
    mean = (torch.where(low & ~dom, s3, 0 * s3) + torch.where(low & ~dom, s4, 0 * s4)) / 2
    for s in (s1, s2, s3, s4):
        s[dom] = 0
        s[low] = 0
    return d1 + d2 + mean + torch.cat([s1, s2, s3, s4], 1).amin(1, keepdim=True)


def test_group_targets_are_the_codes_functions():
    torch.manual_seed(0)
    shape = (2, 1, 6, 6, 6)
    # Probabilities spread over [0, 1] so that every branch (leader sure, members sure, neither) occurs.
    p = [torch.rand(shape, dtype=torch.float64) ** 0.3 for _ in range(4)]
    s = [torch.rand(shape, dtype=torch.float64) * 0.5 + 0.01 for _ in range(4)]
    single = single_leader_target(p[0], p[1:], s, 0.75, 0.85)
    torch.testing.assert_close(single, code_single(*p, *s, 0.75, 0.85), atol=0, rtol=0)
    double = double_leader_target(p[:2], p[2:], s, 0.75, 0.85, 0.3)
    torch.testing.assert_close(double, code_double(*p, *s, 0.75, 0.85, 0.3), atol=1e-15, rtol=0)
    led = p[0] > 0.75
    agree = ~led & (p[1] > 0.85) & (p[2] > 0.85) & (p[3] > 0.85)
    assert led.any() and agree.any() and (single[agree] == 0).all()  # the code's member mean is masked away


def test_soft_target_normalises_over_classes_and_follows_the_leaders():
    torch.manual_seed(1)
    probs = {m: torch.softmax(torch.randn(2, 4, 5, 5, 5, dtype=torch.float64) * 3, 1) for m in MODS}
    soft = {m: torch.softmax(torch.log(probs[m]) / 8, 1) for m in MODS}
    target = group_soft_target(probs, soft, 0.75, 0.85, 0.3)
    torch.testing.assert_close(target.sum(1), torch.ones(2, 5, 5, 5, dtype=torch.float64))
    # Background: FLAIR leads, so where FLAIR is sure of it the unnormalised target is FLAIR's softened probability.
    raw0 = single_leader_target(probs["FLAIR"][:, :1], [probs[m][:, :1] for m in ("T1", "T1c", "T2")],
                                [soft[m][:, :1] for m in ("FLAIR", "T1", "T1c", "T2")], 0.75, 0.85)
    sure = probs["FLAIR"][:, :1] > 0.75
    assert sure.any() and torch.equal(raw0[sure], soft["FLAIR"][:, :1][sure])


def test_random_voxel_keep_draws_as_the_code():
    torch.manual_seed(3)
    keep = random_voxel_keep((2, 4, 5, 6, 7), 0.2)
    torch.manual_seed(3)
    expected = torch.ones(2, 1, 5, 6, 7, dtype=torch.bool)
    for b in range(2):  # per sample: depth, height, width index vectors of int(D*H*W*rate) draws
        d, h, w = torch.randint(5, (42, 1)), torch.randint(6, (42, 1)), torch.randint(7, (42, 1))
        expected[b, 0, d[:, 0], h[:, 0], w[:, 0]] = False
    assert torch.equal(keep, expected) and (~keep).sum() <= 84


# --- losses: the phases and the options ---


def test_rfnet_phase_then_gss_terms(task):
    model = make(task).train()
    x, y = tiny_batch()
    available = torch.tensor([[True, True, True, True], [True, False, True, False]])
    names = {"fuse_ce", "fuse_dice", "prm_ce", "prm_dice", "sep_ce", "sep_dice", "gss_ce"}
    model.set_step(0, 120)  # pretrain 1/4: RFNet's loss; its fused term off for 20/300 of that phase (2 iterations)
    out = model(x, available, y)
    assert set(out.losses) == names and out.losses["fuse_ce"] == 0 and out.losses["gss_ce"] == 0
    model.set_step(2, 120)
    rfnet = model(x, available, y).losses
    assert rfnet["fuse_ce"] > 0 and rfnet["gss_ce"] == 0
    model.set_step(30, 120)
    gss = model(x, available, y).losses
    assert gss["gss_ce"] > 0 and all(torch.isfinite(v) for v in gss.values())
    torch.testing.assert_close(gss["sep_ce"], 0.7 * rfnet["sep_ce"])  # sep weighted 0.7 after the RFNet phase
    # gss_over="complete": only sample 0 has all four modalities; with none complete the term is zero.
    assert model(x, torch.tensor([[True, False, True, True], [True, False, True, False]]), y).losses["gss_ce"] == 0
    everyone = make(task, gss_over="all").train()
    everyone.set_step(30, 120)
    assert everyone(x, torch.tensor([[True, False, True, True], [True, False, True, False]]), y).losses["gss_ce"] > 0


def test_loss_falls_on_a_toy_problem(task):
    model = make(task, pretrain=0.0)  # GSS's phase from the first step (toy_training sets the step)
    x, y = tiny_batch(size=16)
    x[:, 0] += 3 * (y > 0)
    available = torch.ones(2, 4, dtype=torch.bool)
    # the engine's training step, as `bench.py check` runs it (missbench.engine.contract.toy_training)
    losses = [h["total"] for h in contract.toy_training(model, x, y, lambda step: available, 25, stages=False, lr=1e-2)]
    assert losses[-1] < 0.8 * losses[0]


# --- parity with the official code, and its checkpoints ---


@pytest.fixture(scope="module")
def recorded():
    return json.loads((CHECKOUT / "tests" / "data" / "parity_gss.json").read_text())


def official_model(task, recorded, dtype):
    model = GSS(task, MODS, **recorded["config"]["ours"]).to(dtype).eval()
    state = parity.fill([(k, s) for k, s in recorded["keys"]])
    model.load_state_dict({k: v.to(dtype) for k, v in model.official_state_dict(state).items()}, strict=True)
    return model


def assert_fingerprint(t: torch.Tensor, expected: dict, atol: float) -> float:
    got = parity.fingerprint(t)
    assert got["shape"] == expected["shape"]
    diff = max(abs(a - b) for a, b in zip(got["samples"], expected["samples"]))
    assert diff <= atol and got["sum"] == pytest.approx(expected["sum"], abs=atol * 100)
    assert got["abs_sum"] == pytest.approx(expected["abs_sum"], abs=atol * 100)
    return diff


def test_outputs_soft_target_and_losses_are_the_codes(task, recorded):
    assert recorded["commit"] == "4af911815a5cc8d619de955a277555c7600d9b46"
    x, labels = parity.inputs(recorded["config"]["size"])
    available = parity.available()
    model = official_model(task, recorded, torch.float64)
    with torch.no_grad():
        assert_fingerprint(model(x, available).logits.softmax(1), recorded["outputs"]["fuse_probs"], 1e-12)
        feats = model.encode(x)
        probs, soft = {}, {}
        for i, name in enumerate(MODS):
            logits = model.sep(feats[i])
            probs[name], soft[name] = logits.softmax(1), (logits / 8).softmax(1)
        assert_fingerprint(group_soft_target(probs, soft, 0.75, 0.85, 0.3), recorded["outputs"]["soft_target"], 1e-12)
    # The loss terms, float32 (the code's random mask cannot write float64), the same random draws.
    model = official_model(task, recorded, torch.float32)
    model.set_step(0, 1)
    torch.manual_seed(recorded["seeds"]["loss"])
    with torch.no_grad():
        losses = model(x.float(), available, labels).losses
    for name, value in recorded["losses_float32"].items():
        assert float(losses[name]) == pytest.approx(value, rel=2e-5), name


def test_loader_agrees_with_rfnets_key_by_key(task, recorded):
    """GSS's checkpoints are RFNet's layout: its loader (nets/rfnet_official.py) and methods/rfnet.py's agree."""
    state = parity.fill([(k, s) for k, s in recorded["keys"]])
    ours = GSS(task, MODS, width=4).official_state_dict(state)
    theirs = method_class("rfnet")(task, MODS, width=4).official_state_dict(state)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    order = ("T2", "T1c", "FLAIR", "T1")  # another data order: per-modality weights follow the names
    ours = GSS(task, order, width=4).official_state_dict(state)
    theirs = method_class("rfnet")(task, order, width=4).official_state_dict(state)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_bad_parameters_are_refused(task):
    for bad, match in ((dict(gss_over="some"), "gss_over"), (dict(width=5), "width"), (dict(pretrain=1.0), "pretrain"),
                       (dict(temperature=0.0), "temperature")):
        with pytest.raises(ValueError, match=match):
            GSS(task, MODS, **bad)
    with pytest.raises(ValueError, match="official code's modalities"):
        GSS(task, ("A", "B", "C", "D"))
