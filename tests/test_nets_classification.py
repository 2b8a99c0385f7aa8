import pytest
import torch

from missbench.core.method import count_parameters
from missbench.nets.classification import (
    ClassifierHead, SharedEncoder, encoder_for, encoders_for, projected_encoders,
)


@pytest.mark.parametrize(
    ("kind", "shape", "features", "params"),
    [
        ("image", (1, 28, 28), 160, 1_390),  # SMIL LeNet5 convs: 130 + 1,260
        ("spectrogram", (1, 20, 20), 320, 10_412),  # SMIL SNetPluse convs + BN: 160+64 + 6,192+96 + 3,860+40
        ("tabular", (12,), 64, 12 * 64 + 64 + 64 * 64 + 64),
        ("image", (3, 64, 64), 160, 3 * 5 * 25 + 5 + 1_260),
        ("spectrogram", (1, 32, 24), 320, 10_412),
    ],
)
def test_encoder_shapes_and_sizes(kind, shape, features, params):
    enc = encoder_for(kind, shape)
    assert enc.out_features == features
    assert enc(torch.randn(3, *shape)).shape == (3, features)
    assert count_parameters(enc) == params


def test_smil_fusion_head_size():
    # SoundLenet5New: fc1 480 -> 64 (30,784), fc2 64 -> 10 (650).
    head = ClassifierHead(160 + 320, 10)
    assert count_parameters(head) == 31_434
    assert head(torch.randn(2, 480)).shape == (2, 10)


def test_encoders_follow_modality_order_and_accept_pairs():
    inputs = {"image": ("image", (1, 28, 28)), "audio": ("spectrogram", (1, 20, 20))}
    encs = encoders_for(inputs, ("audio", "image"))
    assert [e.out_features for e in encs] == [320, 160]


@pytest.mark.parametrize(
    ("kind", "shape", "match"),
    [("video", (1, 28, 28), "unknown input kind 'video'"), ("image", (28, 28), r"expected \(C, H, W\)"),
     ("spectrogram", (1, 8, 8), "H, W >= 17"), ("tabular", (3, 4), r"expected \(D,\)")],
)
def test_bad_input_spec_is_refused(kind, shape, match):
    with pytest.raises(ValueError, match=match):
        encoder_for(kind, shape)


def test_modality_without_spec_is_refused():
    with pytest.raises(ValueError, match="modality 'text' has no input spec"):
        encoders_for({"image": ("image", (1, 28, 28))}, ("image", "text"))


def test_shared_encoder_reads_every_modality_into_one_feature_size():
    avmnist = {"image": ("image", (1, 28, 28)), "audio": ("spectrogram", (1, 20, 20))}
    shared = SharedEncoder(avmnist, ("image", "audio"), 16)
    assert shared.grid and count_parameters(shared) == 1_390 + 160 * 16 + 16  # SMIL's LeNet-5 on the 28x28 grid
    assert shared(torch.randn(2, 1, 28, 28)).shape == shared(torch.randn(2, 1, 20, 20)).shape == (2, 16)
    mixed = {"photo": ("image", (3, 32, 32)), "table": ("tabular", (7,))}
    shared = SharedEncoder(mixed, ("photo", "table"), 16)
    assert not shared.grid and shared.common(torch.randn(2, 3, 32, 32)).shape == (2, 3 * 64)
    assert shared(torch.randn(2, 3, 32, 32)).shape == shared(torch.randn(2, 7)).shape == (2, 16)


def test_projected_encoders_give_equal_sizes():
    encs = projected_encoders({"image": ("image", (1, 28, 28)), "table": ("tabular", (5,))}, ("image", "table"), 24)
    assert [e(torch.randn(2, *s)).shape for e, s in zip(encs, [(1, 28, 28), (5,)])] == [(2, 24), (2, 24)]
