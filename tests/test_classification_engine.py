"""The classification engine end to end with a tiny test-only method: task, training with fixed masks and
stages, model selection on the validation split, resume, rows, scores and the cli table."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from missbench.experiment import registry
from missbench.cli import main
from missbench.core.inference import subset_predictor
from missbench.core.method import Method, Output
from missbench.core.training import TrainingDefaults
from missbench.core.metrics import classification_scores
from missbench.experiment.protocol import load_protocol
from missbench.engine.run import run
from missbench.core.execution import Execution
from missbench.store.run_folder import load_rows
from missbench.core.subsets import all_subsets
from missbench.core.tasks import get_task
from missbench.core.tasks.classification import SampleBatches

TASK = dict(n_classes=10, inputs={"image": ("image", (1, 28, 28)), "audio": ("spectrogram", (1, 20, 20))})


class Tiny(Method):
    """Per-modality linear encoders, mean fusion over available modalities, a linear head; one stage at
    iteration 2 that stores the mean fused feature of the training data in a buffer and freezes the
    audio encoder."""

    name = "tiny"
    outputs = {"classification": "labels"}
    training_defaults = {"classification": TrainingDefaults(optimizer="adam", lr=1e-2, schedule="constant", dropout="uniform_subset")}
    fits: list[int] = []

    def __init__(self, task, modalities, **params):
        super().__init__(task, modalities, **params)
        self.enc = nn.ModuleList(nn.Linear(int(np.prod(s.shape)), 16) for s in task.inputs.values())
        self.head = nn.Linear(16, task.n_classes)
        self.register_buffer("centre", torch.zeros(16))

    def stage_steps(self, total):
        return [2]

    def fit_stage(self, index, batches):
        Tiny.fits.append(index)
        feats = [self.fuse(self.encode(x), a) for x, a, _ in batches()]
        self.centre.copy_(torch.cat(feats).mean(0))
        self.enc[1].requires_grad_(False)

    def encode(self, x):
        return [e(xm.flatten(1)) for e, xm in zip(self.enc, x)]

    def fuse(self, features, available):
        a = available.float()
        return sum(f * a[:, m, None] for m, f in enumerate(features)) / a.sum(1, keepdim=True)

    def decode(self, features, available, target=None):
        return Output(self.head(torch.relu(self.fuse(features, available) - self.centre)))  # the engine adds the task loss


@pytest.fixture
def tiny(monkeypatch):
    original = registry.method_class
    monkeypatch.setattr(registry, "method_class", lambda name: Tiny if name == "tiny" else original(name))
    Tiny.fits = []
    return Tiny


def spec_of(protocol, **dataset):
    proto = load_protocol(registry.protocol_path(protocol))
    return proto.expand(["tiny"], registry.dataset_class("avmnist_synthetic"), dataset, "smoke")


def test_task_contract():
    task = get_task("classification", **TASK)
    assert task.name == "classification" and task.out_channels("labels") == 10
    assert task.inputs["audio"].kind == "spectrogram" and task.inputs["image"].shape == (1, 28, 28)
    logits = torch.randn(4, 10)
    assert set(task.loss(logits, torch.arange(4), "labels")) == {"ce"}
    probs = task.probabilities(logits, "labels")
    torch.testing.assert_close(probs.sum(1), torch.ones(4))
    assert (task.to_labels(probs.numpy(), "labels") == logits.argmax(1).numpy()).all()
    with pytest.raises(ValueError, match="kind 'video'"):
        get_task("classification", n_classes=3, inputs={"v": ("video", (1, 2, 2))})
    with pytest.raises(ValueError, match="'regions'"):
        task.loss(logits, torch.arange(4), "regions")


def test_sampler_walks_epochs_without_state():
    from missbench.core.dataset import Samples

    s = Samples([str(i) for i in range(10)], [np.zeros((10, 2), np.float32)], np.arange(10) % 3)
    sampler = SampleBatches(s, 4, seed=1, masks=None)
    first = np.concatenate([sampler.indices(k) for k in range(5)])  # 20 = two epochs
    assert sorted(first[:10]) == list(range(10)) and sorted(first[10:]) == list(range(10))
    assert (SampleBatches(s, 4, seed=1, masks=None).indices(3) == first[12:16]).all()


def test_shared_encoding_equals_one_pass_per_subset_on_lists():
    torch.manual_seed(0)
    model = Tiny(get_task("classification", **TASK), ("image", "audio")).eval()
    x = [torch.randn(5, 1, 28, 28), torch.randn(5, 1, 20, 20)]
    subsets = all_subsets(("image", "audio"))
    with torch.no_grad():
        for a, b in zip(subset_predictor(model, subsets)(x), subset_predictor(model, subsets, shared=False)(x)):
            torch.testing.assert_close(a, b)


def test_classification_scores():
    frame = pd.DataFrame({"target": [0, 1, 1, 2], "pred": [0, 1, 0, 2],
                          "prob": [[.8, .1, .1], [.2, .7, .1], [.5, .4, .1], [.1, .1, .8]]})
    s = classification_scores(frame)
    assert s["accuracy"] == s["f1_micro"] == 0.75
    assert s["f1_macro"] == pytest.approx(np.mean([2 / 3, 2 / 3, 1.0]))
    assert s["auc_macro_ovr"] == pytest.approx(1.0)


def test_missing_slots_run_rows_selection_and_stage(tiny, tmp_path):
    spec = spec_of("missing_slots")[2]  # p = 0.5
    assert run(spec, tmp_path, Execution(progress=False)) == "done"
    run_dir, model_dir = tmp_path / spec.run_id, tmp_path / spec.model.model_id  # the score's folder, its model's
    rows = pd.read_parquet(run_dir / "rows.parquet")
    assert len(rows) == 40 and set(rows.condition) == {"masks"} and set(rows.missing_rate) == {0.5}
    assert {"case_id", "eval_subset", "eval_code", "n_available", "target", "pred", "prob", "metric", "value",
            "run_id", "method", "variant", "dataset", "protocol", "mode", "budget", "train_subset", "seed", "split"} <= set(rows)
    assert rows.case_id.is_unique and rows.value.isin([0, 1]).all() and set(rows.metric) == {"correct"}
    assert (rows.n_available >= 1).all() and rows.eval_subset.nunique() >= 2  # each sample under its own mask
    meta = json.loads((model_dir / "meta.json").read_text())
    sel = meta["model_selection"]
    # Validation every 2 iterations, but only after the stage at iteration 2: the pre-stage model is not the method.
    assert sel["split"] == "val" and sel["selected_iteration"] == 4 and [h[0] for h in sel["history"]] == [4]
    assert 0.3 < json.loads((run_dir / "meta.json").read_text())["missing_share"]["test"] < 0.45 and Tiny.fits == [0]
    assert torch.load(model_dir / "checkpoint.pt", weights_only=False)["model"]["centre"].abs().sum() > 0


def test_audio_rate_trains_with_the_masks_and_tests_on_images_only(tiny, tmp_path, monkeypatch):
    seen = []
    original = Tiny.forward

    def spy(self, x, available, target=None):
        if self.training:
            seen.append(available.clone())
            assert all((xm[~available[:, m]] == 0).all() for m, xm in enumerate(x))  # zeroed by the harness
        return original(self, x, available, target)

    monkeypatch.setattr(Tiny, "forward", spy)
    spec = spec_of("audio_rate")[3]  # 20% of 120 samples = 24 of the 60 training samples have audio
    run(spec, tmp_path, Execution(progress=False))
    drawn = torch.cat(seen)
    assert drawn[:, 0].all() and 0 < drawn[:, 1].float().mean() < 0.9
    rows = load_rows(tmp_path)
    assert set(rows.eval_subset) == {"image"} and len(rows) == 40


def test_killed_classification_run_resumes_without_refitting_its_stage(tiny, tmp_path, monkeypatch):
    spec = spec_of("missing_slots")[0]
    exe = Execution(progress=False)
    run(spec, tmp_path / "a", exe)
    original, calls = SampleBatches.indices, {"n": 0}

    def dying(self, step):
        calls["n"] += 1
        if calls["n"] == 4:  # after the stage at 2 and the checkpoint at 2
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(SampleBatches, "indices", dying)
    Tiny.fits = []
    with pytest.raises(KeyboardInterrupt):
        run(spec, tmp_path / "b", exe)
    assert Tiny.fits == [0]
    monkeypatch.setattr(SampleBatches, "indices", original)
    run(spec, tmp_path / "b", exe)
    assert Tiny.fits == [0]  # not refit on resume, and the encoder it froze stays frozen:
    assert torch.load(tmp_path / "b" / spec.model.model_id / "checkpoint.pt", weights_only=False)["frozen"] == ["enc.1.weight", "enc.1.bias"]
    a, b = load_rows(tmp_path / "a"), load_rows(tmp_path / "b")
    pd.testing.assert_frame_equal(a.drop(columns="prob"), b.drop(columns="prob"))
    np.testing.assert_allclose(np.stack(a.prob), np.stack(b.prob), atol=1e-6)
    ma, mb = (json.loads((tmp_path / d / spec.model.model_id / "meta.json").read_text())["model_selection"] for d in "ab")
    assert ma["history"] == mb["history"]


def test_cli_prints_the_classification_table(tiny, tmp_path, capsys):
    assert main(["--protocol", "audio_rate", "--methods", "tiny", "--budget", "smoke", "--no-progress", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{s} (%)\n" in out for s in ("Accuracy", "F1-micro", "F1-macro", "AUC")) and "Dice" not in out
    words = " ".join(out.split())  # the caption is wrapped for the console
    assert "r (share of training samples with audio)" in words and "tested on image only" in words
    lines = [line.split()[0] for line in out.splitlines() if line.startswith("0.")]
    assert lines[:4] == ["0.05", "0.1", "0.15", "0.2"]
