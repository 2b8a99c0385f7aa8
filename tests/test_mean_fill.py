import sys

import torch

from conftest import MODS, tiny_batch, toy_losses
from missbench.dropout import zero_missing
from missbench.registry import method_class
from missbench.subsets import all_subsets


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
    x, y = tiny_batch()
    for s in all_subsets(MODS):
        available = torch.tensor([s.mask] * 2)
        other = x + 3 * (~available)[:, :, None, None, None]
        with torch.no_grad():
            a = model(zero_missing(x, available), available).logits
            b = model(zero_missing(other, available), available).logits
        assert a.shape == (2, 3, 16, 16, 16)
        torch.testing.assert_close(a, b)
    history = toy_losses(model)
    assert set(history[0]) == {"dice", "bce", "total"}
    assert history[-1]["total"] < 0.6 * history[0]["total"]
