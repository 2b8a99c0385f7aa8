import torch

from conftest import MODS, assert_every_pattern_ignores_missing, tiny_batch, toy_losses
from missbench.experiment.registry import method_class


def test_zero_fill_sees_only_available_inputs_and_learns(task):
    torch.manual_seed(0)
    model = method_class("zero_fill")(task, MODS, width=4, depth=2)
    assert model.encode(torch.zeros(1, 4, 8, 8, 8)) is None  # no shared encoding: one pass per subset
    model.eval()
    assert_every_pattern_ignores_missing(model, 3)  # through the harness, which zeroes missing inputs
    x, _ = tiny_batch()
    available = torch.tensor([[True, False, False, True], [False, True, True, False]])
    with torch.no_grad():  # its own forward reads whatever the input holds: it needs the harness's zeroing
        assert not torch.allclose(model(x, available).logits, model(x + 5 * (~available)[:, :, None, None, None], available).logits)
    history = toy_losses(model)
    assert history[-1]["total"] < 0.6 * history[0]["total"]


def test_zero_fill_on_classification_is_smils_fusion_model():
    from conftest import assert_classification_ignores_missing, classification_task, classification_toy_losses
    from missbench.core.method import count_parameters
    from missbench.core.tasks import get_task

    avmnist = get_task("classification", n_classes=10, inputs={"image": ("image", (1, 28, 28)), "audio": ("spectrogram", (1, 20, 20))})
    model = method_class("zero_fill")(avmnist, ("image", "audio"))
    assert count_parameters(model) == 1_390 + 10_412 + 31_434  # SoundLenet5New's encoders and fusion head
    assert model.training_for("classification").weight_decay == 1e-2
    task = classification_task(("image", "table"))
    torch.manual_seed(0)
    model = method_class("zero_fill")(task, ("image", "table")).eval()
    assert_classification_ignores_missing(model, task)
    history = classification_toy_losses(model, task)
    assert history[-1] < 0.6 * history[0]
