import sys

import torch

from conftest import MODS, assert_every_pattern_ignores_missing, toy_losses
from missbench.experiment.registry import method_class


def test_missing_features_are_the_mean_of_the_available_ones():
    fill = sys.modules[method_class("mean_fill").__module__].fill_missing_with_mean
    maps = torch.randn(2, 4, 3, 5)
    available = torch.tensor([[True, False, True, False], [False, False, False, True]])
    out = fill(maps, available)
    torch.testing.assert_close(out[0, 1], (maps[0, 0] + maps[0, 2]) / 2)
    torch.testing.assert_close(out[0, 3], (maps[0, 0] + maps[0, 2]) / 2)
    torch.testing.assert_close(out[0, 2], maps[0, 2])
    assert all(torch.equal(out[1, m], maps[1, 3]) for m in range(4))


def test_mean_fill_forward_invariance_and_learning(task):
    torch.manual_seed(0)
    model = method_class("mean_fill")(task, MODS, width=4, depth=2).eval()
    assert_every_pattern_ignores_missing(model, 3)
    history = toy_losses(model)
    assert set(history[0]) == {"dice", "bce", "total"}
    assert history[-1]["total"] < 0.6 * history[0]["total"]


def test_mean_fill_on_classification_fills_feature_vectors():
    from conftest import assert_classification_ignores_missing, classification_task, classification_toy_losses
    from missbench.core.method import count_parameters
    from missbench.core.tasks import get_task

    avmnist = get_task("classification", n_classes=10, inputs={"image": ("image", (1, 28, 28)), "audio": ("spectrogram", (1, 20, 20))})
    assert count_parameters(method_class("mean_fill")(avmnist, ("image", "audio"))) == 27_150 + 61_772 + 21_194
    task = classification_task(("image", "audio", "table"))
    torch.manual_seed(0)
    model = method_class("mean_fill")(task, tuple(task.inputs), dim=16).eval()
    assert_classification_ignores_missing(model, task, unzeroed=True)
    history = classification_toy_losses(model, task)
    assert history[-1] < 0.6 * history[0]
