"""docs/nets.md documents the blocks a method builds on; its example method is a file that runs."""

from __future__ import annotations

import re

import torch

from conftest import CHECKOUT, make_root
from missbench.cli import main
from missbench.nets.fusion import fill_missing_with_mean, mean_over_available
from missbench.nets.unet3d import UNetDecoder, UNetEncoder
from missbench.testing import MODS, assert_every_pattern_ignores_missing, toy_losses

DOC = (CHECKOUT / "docs" / "nets.md").read_text()
EXAMPLE = re.search(r"```python\n(# methods/fill_unet.py\n.*?)```", DOC, re.S).group(1)


def test_the_documented_shapes_hold():
    enc = UNetEncoder(1, width=4, depth=2)
    out = enc(torch.zeros(2, 1, 16, 16, 16))
    assert [tuple(s.shape) for s in out.skips] == [(2, 4, 16, 16, 16), (2, 8, 8, 8, 8)]
    assert tuple(out.bottleneck.shape) == (2, 16, 4, 4, 4) and tuple(out.pooled.shape) == (2, 16) and enc.downsampling == 4
    dec = UNetDecoder(3, enc.skip_channels, enc.bottleneck_channels, 5)
    logits = dec(torch.zeros(2, 48, 4, 4, 4), [torch.zeros(2, 12, 16, 16, 16), torch.zeros(2, 24, 8, 8, 8)])
    assert tuple(logits.shape) == (2, 5, 16, 16, 16)
    feats, available = torch.randn(2, 3, 4), torch.tensor([[True, False, True], [False, False, False]])
    assert torch.allclose(mean_over_available(feats, available)[0], feats[0, [0, 2]].mean(0))
    assert mean_over_available(feats, available)[1].abs().sum() == 0
    filled = fill_missing_with_mean(feats, available)
    assert torch.equal(filled[0, 1], mean_over_available(feats, available)[0]) and torch.equal(filled[0, 0], feats[0, 0])


def test_the_example_method_passes_the_contract_and_learns(tmp_path, monkeypatch, task):
    root = make_root(tmp_path / "root", {"fill_unet.py": EXAMPLE})
    monkeypatch.setenv("MISSBENCH_ROOT", str(root))
    assert main(["check", "fill_unet", "--param", "width=4", "--param", "depth=2"]) == 0
    from missbench.experiment.registry import method_class

    model = method_class("fill_unet")(task, MODS, width=4, depth=2).eval()
    assert_every_pattern_ignores_missing(model, 3)
    history = toy_losses(model)
    assert history[-1]["total"] < history[0]["total"]
