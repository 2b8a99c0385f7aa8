"""Shared fixtures: the data set's modalities, the segmentation task, tiny inputs.

The tests use the checkout they live in: pyproject.toml puts it first on sys.path (``pythonpath``),
so ``missbench`` is imported from here even when an editable install points at another checkout,
and this file pins the benchmark root to it (``$MISSBENCH_ROOT``, which subprocesses inherit), so
plugins and protocols come from here wherever pytest is started.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The checkout these tests belong to.
CHECKOUT = Path(__file__).resolve().parent.parent
os.environ["MISSBENCH_ROOT"] = str(CHECKOUT)

import pytest  # noqa: E402
import torch  # noqa: E402

from missbench.core.tasks import get_task  # noqa: E402

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
    """Named loss terms per step of Adam (3e-3) on a tiny case whose FLAIR shows the tumour, each step
    with a random availability per sample (seeded, never empty; FLAIR kept in half the samples so
    the task stays learnable), zeroed as the harness does. Every term must be finite at every step."""
    from missbench.core.availability import draw_available, zero_inputs

    model.train()
    x, y = tiny_batch(size=size)
    x[:, 0] += 3 * (y > 0)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    history = []
    for step in range(steps):
        available = draw_available("count_then_subset", x.shape[0], x.shape[1], gen)
        available[0, 0] = True
        model.set_step(step, steps)
        losses = model(zero_inputs(x, available), available, y).losses
        assert losses and all(torch.isfinite(v) for v in losses.values()), f"step {step}: {losses}"
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()} | {"total": total.item()})
    return history


def assert_shared_encoding_matches(model: torch.nn.Module, **tolerance: float) -> None:
    """Encoding once and decoding per subset gives what one full pass per subset gives, for all 15 subsets."""
    from missbench.core.inference import subset_predictor
    from missbench.core.subsets import all_subsets

    x, _ = tiny_batch()
    subsets = all_subsets(MODS)
    with torch.no_grad():
        shared = subset_predictor(model, subsets, shared=True)(x)
        plain = subset_predictor(model, subsets, shared=False)(x)
    assert len(shared) == len(plain) == 15
    for a, b in zip(shared, plain):
        torch.testing.assert_close(a, b, **tolerance)


def assert_every_pattern_ignores_missing(model: torch.nn.Module, out_channels: int, masks_itself: bool = False) -> None:
    """For each of the 15 availability patterns: the logits have the right shape, and two inputs that differ
    only, and by a lot, in the missing modalities give the same predictions through the harness's inference
    (`subset_predictor`: its plain passes zero missing inputs, its shared encoding substitutes the features of
    zeros); with ``masks_itself``, also through the method's own forward on the raw inputs (it never reads a
    missing modality, whatever the input holds)."""
    from missbench.core.availability import zero_inputs
    from missbench.core.inference import subset_predictor
    from missbench.core.subsets import all_subsets

    x, _ = tiny_batch()
    for s in all_subsets(MODS):
        available = torch.tensor([s.mask] * x.shape[0])
        other = x + 3 * (~available)[:, :, None, None, None]
        assert len(s) == len(MODS) or not torch.equal(other, x)
        with torch.no_grad():
            assert model(zero_inputs(x, available), available).logits.shape == (x.shape[0], out_channels, *x.shape[2:])
            for shared in (True, False):
                predict = subset_predictor(model, [s], shared)
                torch.testing.assert_close(predict(x)[0], predict(other)[0])
            if masks_itself:
                torch.testing.assert_close(model(x, available).logits, model(other, available).logits)


def smoke_spec(method: str):
    """The non-dedicated protocol's run spec for ``method`` at the smoke budget (4 iterations, checkpoint every 2)."""
    from missbench.experiment import registry
    from missbench.experiment.protocol import load_protocol

    proto = load_protocol(registry.protocol_path("non_dedicated"))
    return proto.expand([method], registry.dataset_class("brats_synthetic"), {}, "smoke")[0]


def run_killed_then_resumed(spec, tmp_path, monkeypatch):
    """Run ``spec`` uninterrupted into tmp_path/a; into tmp_path/b, kill it after the checkpoint at
    iteration 2 (checking what the kill left), then rerun it. Returns the two run folders."""
    import pytest

    from missbench.engine.run import run
    from missbench.core.execution import Execution
    from missbench.core.tasks.segmentation import PatchSampler

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


# Classification (issue #4): a tiny image + audio (+ table) task and the analogue of the segmentation checks.
CLS_INPUTS = {"image": ("image", (1, 28, 28)), "audio": ("spectrogram", (1, 20, 20)), "table": ("tabular", (6,))}


def classification_task(modalities: tuple[str, ...] = ("image", "audio"), n_classes: int = 4):
    """The classification task on the first of ``CLS_INPUTS``' modalities named in ``modalities``."""
    return get_task("classification", n_classes=n_classes, inputs={m: CLS_INPUTS[m] for m in modalities})


def tiny_classification_batch(task, batch: int = 8, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-modality inputs (B x shape) that each carry the label (a class-dependent offset plus noise), and labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(batch) % task.n_classes
    x = []
    for spec in task.inputs.values():
        signal = torch.randn(task.n_classes, *spec.shape, generator=g)
        x.append(signal[y] + 0.3 * torch.randn(batch, *spec.shape, generator=g))
    return x, y


def assert_classification_ignores_missing(model: torch.nn.Module, task, masks_itself: bool = False) -> None:
    """For every non-empty availability pattern the logits are B x n_classes, and inputs that differ only, and
    by a lot, in the missing modalities give the same predictions through the harness's inference and, with
    ``masks_itself``, through the method's own forward on the raw inputs."""
    from missbench.core.availability import zero_inputs
    from missbench.core.inference import subset_predictor
    from missbench.core.subsets import all_subsets

    x, _ = tiny_classification_batch(task)
    b = x[0].shape[0]
    for s in all_subsets(tuple(task.inputs)):
        available = torch.tensor([s.mask] * b)
        other = [xm + 3 * (not a) for xm, a in zip(x, s.mask)]
        assert all(s.mask) or any(not torch.equal(o, xm) for o, xm in zip(other, x))
        with torch.no_grad():
            assert model(zero_inputs(x, available), available).logits.shape == (b, task.n_classes)
            for shared in (True, False):
                predict = subset_predictor(model, [s], shared)
                torch.testing.assert_close(predict(x)[0], predict(other)[0])
            if masks_itself:
                torch.testing.assert_close(model(x, available).logits, model(other, available).logits)


def classification_toy_losses(model: torch.nn.Module, task, steps: int = 40, batch: int = 16) -> list[float]:
    """Total loss per step of Adam (3e-3) on `tiny_classification_batch`, about a third of the slots missing."""
    from missbench.core.availability import zero_inputs

    model.train()
    x, y = tiny_classification_batch(task, batch)
    available = torch.rand(batch, len(x), generator=torch.Generator().manual_seed(0)) > 0.35
    available[~available.any(1), 0] = True
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    history = []
    for step in range(steps):
        model.set_step(step, steps)
        losses = model(zero_inputs(x, available), available, y).losses
        assert losses and all(torch.isfinite(v) for v in losses.values()), f"step {step}: {losses}"
        total = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        history.append(total.item())
    return history


def assert_protocol_error(tmp_path, text: str, message: str) -> None:
    """Loading a protocol file holding ``text`` fails with ``message`` and names the file."""
    import re

    from missbench.experiment.protocol import ProtocolError, load_protocol

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProtocolError, match=re.escape(message)) as err:
        load_protocol(path)
    assert str(path) in str(err.value)


def direct_poe(mu, var, kept):
    """mu = Σ mu_i/var_i / (1 + Σ 1/var_i), var = 1 / (1 + Σ 1/var_i) over the kept experts and the N(0, 1) prior."""
    precision = 1 + sum(1 / var[i] for i in kept)
    return sum(mu[i] / var[i] for i in kept) / precision, 1 / precision
