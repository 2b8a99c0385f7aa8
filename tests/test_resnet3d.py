"""Tests for the official-ShaSpec BraTS backbone (missbench/nets/resnet3d.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from missbench.nets import EncoderOutput
from missbench.nets.resnet3d import (
    ResNet3dDecoder,
    ResNet3dEncoder,
    SpatialInstanceNorm3d,
    WSConv3d,
)

M = 4  # BraTS modalities
N_CLASSES = 3  # ET, WT, TC


def _count(params) -> int:
    return sum(p.numel() for p in params)


@pytest.fixture(scope="module")
def encoder() -> ResNet3dEncoder:
    torch.manual_seed(0)
    return ResNet3dEncoder().eval()


@pytest.fixture(scope="module")
def decoder() -> ResNet3dDecoder:
    torch.manual_seed(1)
    return ResNet3dDecoder(n_modalities=M, out_channels=N_CLASSES).eval()


def _concat_modalities(t: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*M) x C x ... -> B x M*C x ... (modality-major channels, as the official ``view``)."""
    return t.reshape(batch, -1, *t.shape[2:])


# ---------------------------------------------------------------- parameter counts (DualNet_SS.py, Res50.py at 081fe7a)


def test_encoder_parameter_count(encoder):
    assert _count(encoder.trunk_parameters()) == 29_029_440
    assert _count(encoder.parameters()) == 35_127_872
    assert _count(encoder.parameters()) - _count(encoder.trunk_parameters()) == 6_098_432


def test_decoder_parameter_count(decoder):
    assert _count(decoder.parameters()) == 8_528_800


def test_full_shaspec_parameter_count(encoder, decoder):
    fusion = WSConv3d(2 * 256, 256, 3, padding=1)  # CompositionalLayer conv, bias-free
    dco = nn.Linear(256, 4)
    assert _count(fusion.parameters()) == 3_538_944
    assert _count(dco.parameters()) == 1_028
    total = 5 * _count(encoder.parameters()) + _count(decoder.parameters())
    total += _count(fusion.parameters()) + _count(dco.parameters())
    assert total == 187_708_132


def test_attributes(encoder):
    assert encoder.skip_channels == [64, 256, 512, 1024]
    assert encoder.bottleneck_channels == 256
    assert encoder.pooled_channels == 256


def test_all_convs_bias_free_and_weight_standardised(encoder, decoder):
    for mod in (encoder, decoder):
        for m in mod.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                assert m.bias is None
    enc_convs = [m for m in encoder.modules() if isinstance(m, nn.Conv3d)]
    assert enc_convs and all(isinstance(m, WSConv3d) for m in enc_convs)
    # Decoder: everything standardised except the official plain cls_conv.
    dec_plain = [m for m in decoder.modules() if isinstance(m, nn.Conv3d) and not isinstance(m, WSConv3d)]
    assert dec_plain == [decoder.cls_conv]


# ---------------------------------------------------------------------------------------- shapes


def test_encoder_decoder_shapes(encoder, decoder):
    torch.manual_seed(2)
    b, d, h, w = 1, 16, 64, 64  # total downsampling 16 in D, 32 in H/W; layer4 map is 1x2x2
    x = torch.randn(b * M, 1, d, h, w)
    with torch.no_grad():
        out = encoder(x)
        assert isinstance(out, EncoderOutput)
        assert [tuple(s.shape) for s in out.skips] == [
            (b * M, 64, d, h // 2, w // 2),
            (b * M, 256, d // 2, h // 4, w // 4),
            (b * M, 512, d // 4, h // 8, w // 8),
            (b * M, 1024, d // 8, h // 16, w // 16),
        ]
        assert tuple(out.bottleneck.shape) == (b * M, 256, d // 16, h // 32, w // 32)
        assert tuple(out.pooled.shape) == (b * M, 256)
        # pooled = spatial mean of the reduced (pre-ASPP) map
        reduced = encoder.reduce(encoder.layer4(out.skips[3]))
        torch.testing.assert_close(out.pooled, reduced.mean(dim=(2, 3, 4)))

        logits = decoder(
            _concat_modalities(out.bottleneck, b), [_concat_modalities(s, b) for s in out.skips]
        )
    assert tuple(logits.shape) == (b, N_CLASSES, d, h, w)
    assert torch.isfinite(logits).all()


def test_decoder_handles_odd_sizes():
    torch.manual_seed(3)
    enc = ResNet3dEncoder(blocks=(1, 1, 1, 1), planes=(8, 8, 8, 8), bottleneck_channels=16).eval()
    dec = ResNet3dDecoder(2, 2, skip_channels=enc.skip_channels, bottleneck_channels=16,
                          decoder_channels=(16, 8, 8, 4)).eval()
    size = (17, 66, 70)
    with torch.no_grad():
        out = enc(torch.randn(2, 1, *size))
        cat = lambda t: _concat_modalities(t, 1)  # noqa: E731
        logits = dec(cat(out.bottleneck), [cat(s) for s in out.skips], output_size=size)
    assert tuple(logits.shape) == (1, 2, *size)


# --------------------------------------------------------------------------------------- WSConv3d


def test_wsconv_weights_are_standardised():
    torch.manual_seed(4)
    conv = WSConv3d(5, 7, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(3.0).add_(0.5)  # make raw weights clearly non-standard
        w_hat = conv.standardized_weight().flatten(1)
    torch.testing.assert_close(w_hat.mean(dim=1), torch.zeros(7), atol=1e-6, rtol=0)
    torch.testing.assert_close(w_hat.std(dim=1), torch.ones(7), atol=1e-5, rtol=0)
    # forward really uses the standardised kernel (official formula: unbiased var, eps in sqrt)
    w = conv.weight
    c = w - w.mean(dim=(1, 2, 3, 4), keepdim=True)
    ref_w = c / torch.sqrt(c.flatten(1).var(dim=1) + 1e-12).view(-1, 1, 1, 1, 1)
    x = torch.randn(2, 5, 4, 5, 6)
    torch.testing.assert_close(conv(x), F.conv3d(x, ref_w, None, 1, 1))
    assert conv.bias is None


# -------------------------------------------------------------------------- ASPP global branch


def test_spatial_instance_norm_matches_torch_on_multi_voxel_maps():
    torch.manual_seed(5)
    ours, ref = SpatialInstanceNorm3d(6), nn.InstanceNorm3d(6, affine=True)
    with torch.no_grad():
        for p in (ours.weight, ours.bias):
            p.normal_()
        ref.weight.copy_(ours.weight)
        ref.bias.copy_(ours.bias)
    x = torch.randn(3, 6, 2, 3, 4)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


def test_global_branch_carries_no_information(encoder):
    branch = encoder.aspp.global_branch
    torch.manual_seed(6)
    beta = torch.randn(256)
    saved = branch.norm.bias.detach().clone()
    try:
        with torch.no_grad():
            branch.norm.bias.copy_(beta)
        x1 = torch.randn(2, 256, 1, 2, 2)
        x2 = 5.0 * torch.randn(2, 256, 1, 2, 2) + 3.0
        y1, y2 = branch(x1), branch(x2)
        # same output for different inputs: exactly LeakyReLU(beta), broadcast
        assert torch.equal(y1, y2)
        expected = F.leaky_relu(beta, 0.01).view(1, 256, 1, 1, 1).expand_as(y1)
        torch.testing.assert_close(y1, expected, atol=0, rtol=0)

        # what the official code computes (nn.InstanceNorm3d with torch's size check removed,
        # i.e. the underlying aten op) is the same up to float rounding: torch's kernel leaves
        # x - mean(x) at ~1 ulp of x instead of 0, amplified by 1/sqrt(eps) ~ 316 (in float64
        # the gap vanishes)
        pooled = branch.conv(x1.mean(dim=(2, 3, 4), keepdim=True)).detach()
        gamma, b = branch.norm.weight.detach(), branch.norm.bias.detach()
        ours = branch.norm(pooled)
        official32 = torch.instance_norm(pooled, gamma, b, None, None, True, 0.1, 1e-5, False)
        bound = 1e-6 * pooled.abs().max().item() / 1e-5**0.5 * gamma.abs().max().item()
        assert (ours - official32).abs().max().item() <= bound
        official64 = torch.instance_norm(pooled.double(), gamma.double(), b.double(), None, None,
                                         True, 0.1, 1e-5, False)
        torch.testing.assert_close(ours.double(), official64, atol=1e-6, rtol=0)
        # ... while the stock module refuses a 1x1x1 map
        stock = nn.InstanceNorm3d(256, affine=True).train()
        with pytest.raises((ValueError, RuntimeError)):
            stock(pooled)

        # and, as in the official code, the branch's conv weight and gamma get zero gradient
        branch.zero_grad(set_to_none=True)
        branch(x1.requires_grad_()).sum().backward()
        assert torch.count_nonzero(branch.conv.weight.grad) == 0
        assert torch.count_nonzero(branch.norm.weight.grad) == 0
        assert torch.count_nonzero(x1.grad) == 0
        assert branch.norm.bias.grad.abs().sum() > 0
    finally:
        with torch.no_grad():
            branch.norm.bias.copy_(saved)
        branch.zero_grad(set_to_none=True)
