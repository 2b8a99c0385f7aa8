import torch

from conftest import MODS, assert_every_pattern_ignores_missing, toy_losses
from missbench.experiment.registry import method_class


def test_mean_fill_forward_invariance_and_learning(task):
    torch.manual_seed(0)
    model = method_class("mean_fill")(task, MODS, width=4, depth=2).eval()
    assert_every_pattern_ignores_missing(model, 3, masks_itself=True)
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
    assert_classification_ignores_missing(model, task, masks_itself=True)
    history = classification_toy_losses(model, task)
    assert history[-1] < 0.6 * history[0]
