import pytest
import torch

from conftest import MODS, assert_every_pattern_ignores_missing, assert_shared_encoding_matches, tiny_batch, toy_losses
from missbench.core.availability import zero_inputs
from missbench.core.method import count_parameters
from missbench.nets.uhemis import niftynet_l2
from missbench.experiment.registry import method_class

HeMIS = method_class("hemis")


def make(task, **params):
    torch.manual_seed(0)
    return HeMIS(task, MODS, **{"width": 4, "depth": 2, **params}).eval()


def test_decoder_is_fed_the_moments_of_the_available_encodings(task):
    model = make(task)
    x, _ = tiny_batch()
    available = torch.tensor([[True, True, False, True], [False, True, False, False]])
    seen = {}
    handle = model.decoder.register_forward_pre_hook(lambda mod, args: seen.update(skips=args[0]))
    with torch.no_grad():
        model(zero_inputs(x, available), available)
        feats = model.encode(zero_inputs(x, available))
    handle.remove()
    assert [s.shape[1] for s in seen["skips"]] == [4, 8, 16, 32]  # [mean, var] of (2, 4, 8, 16) at width 4
    for k, fused in enumerate(seen["skips"]):
        for b in range(2):
            kept = torch.stack([feats[m][k][b] for m in range(4) if available[b, m]])
            torch.testing.assert_close(fused[b], torch.cat([kept.mean(0), kept.var(0, unbiased=False)]))


@pytest.mark.parametrize("backbone", ["paper", "common"])
def test_forward_with_every_availability_pattern_ignores_missing_inputs(task, backbone):
    model = make(task, backbone=backbone)
    assert_every_pattern_ignores_missing(model, 4, masks_itself=True)


@pytest.mark.parametrize("backbone", ["paper", "common"])
def test_shared_encoding_equals_one_pass_per_subset(task, backbone):
    model = make(task, backbone=backbone)
    assert_shared_encoding_matches(model)


def test_loss_terms_are_ce_dice_and_the_code_l2(task):
    model = make(task)
    x, y = tiny_batch()
    available = torch.tensor([[True, False, False, True], [True, True, True, True]])
    out = model.training_output(zero_inputs(x, available), available, y)
    assert set(out.losses) == {"ce", "dice", "l2"}
    assert all(torch.isfinite(v) and v >= 0 for v in out.losses.values())
    kernels = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(kernels) == 4 * 9 + 7  # per encoder: stem + 4 blocks x 2; decoder: 3 blocks x 2 + head
    torch.testing.assert_close(out.losses["l2"], 1e-5 * torch.stack([0.5 * w.pow(2).sum() for w in kernels]).mean())
    torch.testing.assert_close(niftynet_l2(model, 1e-5), out.losses["l2"])
    assert "l2" not in make(task, l2=0)(x, torch.ones(2, 4, dtype=torch.bool), y).losses


def test_loss_falls_on_a_toy_problem(task):
    history = toy_losses(make(task))
    assert history[-1]["total"] < 0.6 * history[0]["total"]


def test_paper_width_parameter_count_and_training_defaults(task):
    model = HeMIS(task, MODS)
    assert model.encoders[0].out_channels == [4, 8, 16, 32]  # U-HeMIS blocks end in n/2 channels
    assert count_parameters(model.encoders[0]) == 111_776
    assert count_parameters(model.decoder) == 118_784
    assert count_parameters(model) == 565_888
    cfg = HeMIS.training_defaults["segmentation"]
    assert (cfg.optimizer, cfg.lr, cfg.dropout, cfg.warmup_fraction, cfg.weight_decay) == ("adam", 1e-3, "count_then_subset", 0.0, 0.0)
    assert HeMIS.outputs == {"segmentation": "labels", "classification": "labels"}


def test_bad_parameter_is_refused(task):
    with pytest.raises(ValueError, match="unknown parameter 'layers'"):
        HeMIS(task, MODS, layers=3)
    with pytest.raises(ValueError, match="backbone='unet'"):
        HeMIS(task, MODS, backbone="unet")
    with pytest.raises(ValueError, match="width"):
        HeMIS(task, MODS, width=3)


def test_common_backbone_fuses_moments_on_the_shared_unet(task):
    model = HeMIS(task, MODS, backbone="common")
    assert count_parameters(model) == 1_263_044  # U-Net width 8, depth 3; decoder fed [mean, var] per scale
    assert type(model.encoders[0]).__name__ == "PyramidEncoder"


def test_classification_fuses_moments_of_projected_feature_vectors():
    from conftest import assert_classification_ignores_missing, classification_task, classification_toy_losses, tiny_classification_batch

    task = classification_task(("image", "audio", "table"), n_classes=10)
    torch.manual_seed(0)
    model = HeMIS(task, tuple(task.inputs)).eval()
    # encoders 1,390 + 10,412 + (6·64+64 + 64·64+64), each + Linear(·, 64); head 128·64+64 + 64·10+10
    assert count_parameters(model) == 1_390 + 10_412 + 4_608 + (160 + 320 + 64) * 64 + 3 * 64 + 8_256 + 650
    seen = {}
    handle = model.classifier.register_forward_pre_hook(lambda mod, args: seen.update(fused=args[0]))
    x, _ = tiny_classification_batch(task)
    available = torch.tensor([[True, False, True]] * 8)
    with torch.no_grad():
        model(x, available)
        feats = model.encode(x)
    handle.remove()
    kept = torch.stack([feats[0], feats[2]])
    torch.testing.assert_close(seen["fused"], torch.cat([kept.mean(0), kept.var(0, unbiased=False)], 1))
    assert_classification_ignores_missing(model, task, masks_itself=True)
    assert "l2" not in model.train()(x, available, torch.zeros(8, dtype=torch.long)).losses
    history = classification_toy_losses(HeMIS(task, tuple(task.inputs)), task)
    assert history[-1] < 0.5 * history[0]
