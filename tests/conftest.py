"""Shared fixtures: the data set's modalities, the segmentation task, tiny inputs."""

from __future__ import annotations

import pytest
import torch

from missbench.tasks import get_task

MODS = ("FLAIR", "T1", "T1c", "T2")


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture
def task():
    return get_task("segmentation")


def tiny_batch(batch: int = 2, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 4-modality volumes and a label map with nested regions."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, len(MODS), size, size, size, generator=g)
    y = torch.zeros(batch, size, size, size, dtype=torch.long)
    c = size // 2
    y[:, c - 5 : c + 5, c - 5 : c + 5, c - 5 : c + 5] = 2
    y[:, c - 3 : c + 3, c - 3 : c + 3, c - 3 : c + 3] = 1
    y[:, c - 1 : c + 2, c - 1 : c + 2, c - 1 : c + 2] = 4
    return x, y


def toy_losses(model: torch.nn.Module, steps: int = 60, size: int = 16) -> list[dict[str, float]]:
    """Named loss terms per step of Adam (3e-3) on a tiny case whose FLAIR shows the tumour, all modalities present."""
    model.train()
    x, y = tiny_batch(size=size)
    x[:, 0] += 3 * (y > 0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    available = torch.ones(x.shape[0], x.shape[1], dtype=torch.bool)
    history = []
    for _ in range(steps):
        losses = model(x, available, y).losses
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()} | {"total": total.item()})
    return history


def assert_shared_encoding_matches(model: torch.nn.Module, **tolerance: float) -> None:
    """Encoding once and decoding per subset gives what one full pass per subset gives, for all 15 subsets."""
    from missbench.evaluate import subset_predictor
    from missbench.subsets import all_subsets

    x, _ = tiny_batch()
    subsets = all_subsets(MODS)
    with torch.no_grad():
        shared = subset_predictor(model, subsets, shared=True)(x)
        plain = subset_predictor(model, subsets, shared=False)(x)
    assert len(shared) == len(plain) == 15
    for a, b in zip(shared, plain):
        torch.testing.assert_close(a, b, **tolerance)


def assert_every_pattern_ignores_missing(model: torch.nn.Module, out_channels: int, unzeroed: bool = False) -> None:
    """A forward with each of the 15 availability patterns has the right shape, and changing a missing
    modality's input changes nothing: after the harness zeroes it, or, with ``unzeroed``, even without."""
    from missbench.dropout import zero_missing
    from missbench.subsets import all_subsets

    x, _ = tiny_batch()
    for s in all_subsets(MODS):
        available = torch.tensor([s.mask] * x.shape[0])
        other = x + 3 * (~available)[:, :, None, None, None]
        with torch.no_grad():
            a = model(zero_missing(x, available), available).logits
            b = model(other if unzeroed else zero_missing(other, available), available).logits
        assert a.shape == (x.shape[0], out_channels, *x.shape[2:])
        torch.testing.assert_close(a, b)


def smoke_spec(method: str):
    """The non-dedicated protocol's run spec for ``method`` at the smoke budget (4 iterations, checkpoint every 2)."""
    from missbench import registry
    from missbench.protocol import load_protocol

    proto = load_protocol(registry.protocol_path("non_dedicated"))
    return proto.expand([method], registry.dataset_class("brats_synthetic"), {}, "smoke")[0]


def run_killed_then_resumed(spec, tmp_path, monkeypatch):
    """Run ``spec`` uninterrupted into tmp_path/a; into tmp_path/b, kill it after the checkpoint at
    iteration 2 (checking what the kill left), then rerun it. Returns the two run folders."""
    import pytest

    from missbench.runner import run
    from missbench.spec import Execution
    from missbench.train import PatchSampler

    exe = Execution(progress=False)
    assert run(spec, tmp_path / "a", exe) == "done"
    original, calls = PatchSampler.sample, {"n": 0}

    def dying(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:  # after the checkpoint at iteration 2
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(PatchSampler, "sample", dying)
    with pytest.raises(KeyboardInterrupt):
        run(spec, tmp_path / "b", exe)
    killed = tmp_path / "b" / spec.run_id
    assert (killed / "checkpoint.pt").exists() and not (killed / "DONE").exists()
    assert torch.load(killed / "checkpoint.pt", weights_only=False)["step"] == 2
    monkeypatch.setattr(PatchSampler, "sample", original)
    assert run(spec, tmp_path / "b", exe) == "done"
    return tmp_path / "a" / spec.run_id, killed
