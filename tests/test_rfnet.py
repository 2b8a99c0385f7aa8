import pytest
import torch

from conftest import MODS, assert_shared_encoding_matches, tiny_batch
from missbench.core.availability import zero_inputs
from missbench.core.method import count_parameters
from missbench.nets.rfnet import RegionAwareFusion, RFNetEncoder, batch_dice_loss, mask_modalities, softmax_weighted_ce
from missbench.experiment.registry import method_class
from missbench.core.subsets import all_subsets
from missbench.core.tasks.segmentation import labels_onehot

RFNet = method_class("rfnet")
BACKBONES = [{"backbone": "paper", "width": 4}, {"backbone": "common", "width": 4, "depth": 2}]


def make(task, **params):
    torch.manual_seed(0)
    return RFNet(task, MODS, **{"width": 4, **params}).eval()


def test_parameter_counts_at_the_official_width(task):
    model = RFNet(task, MODS)
    assert model.params["width"] == 16
    assert count_parameters(model) == 8_984_960  # the official code's 8.98M
    assert count_parameters(model.encoders[0]) == 1_466_496
    assert count_parameters(model.fusion) == 2_532_588
    assert count_parameters(model.sep) == 586_388
    assert [m.shape[1] for m in RFNetEncoder()(torch.zeros(1, 1, 16, 16, 16))] == [16, 32, 64, 128]
    assert count_parameters(RFNet(task, MODS, backbone="common")) == 1_692_944


@pytest.mark.parametrize("params", BACKBONES)
def test_forward_with_every_availability_pattern(task, params):
    model = make(task, **params)
    x, _ = tiny_batch(batch=1)
    for s in all_subsets(MODS):
        available = torch.tensor([s.mask])
        with torch.no_grad():
            out = model(zero_inputs(x, available), available)
        assert out.logits.shape == (1, 4, 16, 16, 16) and not out.losses


@pytest.mark.parametrize("params", BACKBONES)
def test_missing_input_cannot_change_the_output(task, params):
    model = make(task, **params)
    x, _ = tiny_batch()
    available = torch.tensor([[True, False, True, False], [False, True, True, True]])
    other = x.clone()
    other[~available] = torch.randn_like(other[~available]) * 5
    with torch.no_grad():
        a = model(zero_inputs(x, available), available).logits
        b = model(other, available).logits  # unzeroed: the features of missing modalities are masked
        # Features (not only inputs) are masked: a missing modality's features cannot leak either.
        feats = model.encode(zero_inputs(x, available))
        noisy = [[f + 3 * (m in (1, 3)) for f in fm] for m, fm in enumerate(feats)]  # modalities missing in sample 0
        c = model.decode(noisy, available).logits
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[0], c[0])


@pytest.mark.parametrize("params", BACKBONES)
def test_shared_encoding_equals_one_pass_per_subset(task, params):
    model = make(task, **params)
    assert_shared_encoding_matches(model, atol=1e-5, rtol=0)


def test_region_aware_fusion_matches_a_direct_computation():
    torch.manual_seed(0)
    b, m, c, r, s = 2, 4, 6, 4, 4
    rfm = RegionAwareFusion(c, m, r).eval()
    x = torch.randn(b, m, c, s, s, s)
    available = torch.tensor([[True, False, True, True], [False, False, True, False]])
    y = mask_modalities(x, available)
    assert (y[0, 1] == 0).all() and (y[1, [0, 1, 3]] == 0).all() and torch.equal(y[0, 0], x[0, 0])
    prm = torch.softmax(torch.randn(b, r, s, s, s), 1)
    weights = rfm.modality_weights(y, prm)
    regions = []
    for i in range(r):
        feat = y * prm[:, i, None, None]  # B x M x C x S: each modality restricted to region i
        avg_p = prm[:, i].mean((1, 2, 3)) + 1e-7
        pooled = feat.mean((3, 4, 5)) / avg_p[:, None, None]
        inp = torch.cat([pooled.reshape(b, m * c), avg_p[:, None]], 1)
        mlp = rfm.weight_mlps[i]
        w = torch.sigmoid(mlp[2](torch.nn.functional.leaky_relu(mlp[0](inp[..., None, None, None]), 0.2))).view(b, m)
        torch.testing.assert_close(weights[:, i], w)
        regions.append((feat * w[:, :, None, None, None, None]).sum(1))
    expected = torch.cat([rfm.region_fusion(torch.cat(regions, 1)), rfm.short_cut(y.flatten(1, 2))], 1)
    torch.testing.assert_close(rfm(y, prm), expected)
    assert expected.shape == (b, c, s, s, s)


def test_losses_are_the_code_criterions():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(2, 4, 3, 3, 3), 1)
    labels = torch.randint(0, 4, (2, 3, 3, 3))
    onehot = torch.nn.functional.one_hot(labels, 4).movedim(-1, 1).float()
    ce = 0
    for i in range(4):
        w = 1 - onehot[:, i].sum((1, 2, 3)) / onehot.sum((1, 2, 3, 4))
        ce = ce - w.view(-1, 1, 1, 1) * onehot[:, i] * torch.log(probs[:, i].clamp(0.005, 1))
    torch.testing.assert_close(softmax_weighted_ce(probs, onehot), ce.mean())
    dice = sum(2 * (probs[:, i] * onehot[:, i]).sum() / (probs[:, i].sum() + onehot[:, i].sum() + 1e-7) for i in range(4)) / 4
    torch.testing.assert_close(batch_dice_loss(probs, onehot), 1 - dice)
    # Label 4 is RFNet's class 3, the task's fourth channel.
    onehot = labels_onehot(torch.tensor([[0, 1, 2, 4]]))
    torch.testing.assert_close(onehot[0].argmax(0), torch.tensor([0, 1, 2, 3]))


def test_loss_terms_fusion_start_and_separate_decoder_pairs(task):
    model = make(task)
    x, y = tiny_batch()
    available = torch.tensor([[True, False, True, False], [False, False, True, False]])
    x = zero_inputs(x, available)
    names = {"fuse_ce", "fuse_dice", "prm_ce", "prm_dice", "sep_ce", "sep_dice"}
    model.set_step(0, 150)  # the fused term is off for the first 20/300 of the budget
    out = model(x, available, y)
    assert set(out.losses) == names and out.losses["fuse_ce"] == 0 and out.losses["fuse_dice"] == 0
    assert all(torch.isfinite(v) and v >= 0 for v in out.losses.values())
    model.set_step(9, 150)
    assert model(x, available, y).losses["fuse_ce"] == 0
    model.set_step(10, 150)
    on = model(x, available, y)
    assert on.losses["fuse_ce"] > 0 and on.losses["fuse_dice"] > 0
    # sep over available pairs: FLAIR on sample 0, T1c on both, summed over modalities.
    feats = model.encode(x)
    onehot = labels_onehot(y)
    expected = 0
    for m, rows in ((0, [0]), (2, [0, 1])):
        probs = torch.softmax(model.separate_logits([f[rows] for f in feats[m]]), 1)
        expected = expected + softmax_weighted_ce(probs, onehot[rows])
    torch.testing.assert_close(on.losses["sep_ce"], expected)
    # The code's variant: all four modalities on every sample.
    allm = make(task, sep_over="all")
    allm.set_step(10, 150)
    every = sum(softmax_weighted_ce(torch.softmax(allm.separate_logits(f), 1), onehot) for f in allm.encode(x))
    torch.testing.assert_close(allm(x, available, y).losses["sep_ce"], every)


@pytest.mark.parametrize("params", BACKBONES)
def test_loss_falls_on_a_toy_problem(task, params):
    model = make(task, **params).train()
    model.set_step(1, 1)
    x, y = tiny_batch(size=16)
    x[:, 0] += 3 * (y > 0)  # FLAIR shows the tumour
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)  # six CE + Dice terms at width 4: 3e-3 needs ~60 steps
    available = torch.ones(2, 4, dtype=torch.bool)
    losses = []
    for _ in range(40):
        out = model(x, available, y)
        assert all(torch.isfinite(v) for v in out.losses.values())
        loss = sum(out.losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_bad_parameters_are_refused(task):
    with pytest.raises(ValueError, match="backbone"):
        RFNet(task, MODS, backbone="unet")
    with pytest.raises(ValueError, match="width"):
        RFNet(task, MODS, width=5)
    with pytest.raises(ValueError, match="sep_over"):
        RFNet(task, MODS, sep_over="some")
    with pytest.raises(ValueError, match="unknown parameter"):
        RFNet(task, MODS, alpha=1)
