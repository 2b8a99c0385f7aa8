"""Released checkpoints as models (issue: models and scores): a manifest names the method, its parameters,
the weights file with its SHA-256 and where it comes from; `bench.py evaluate --released` imports it as a
finished model through the method's loader and scores it like any other."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from conftest import MODS
from missbench.cli import main
from missbench.core.tasks import get_task
from missbench.core.execution import Execution
from missbench.engine.run import load_model
from missbench.experiment import registry
from missbench.store.run_folder import file_sha256, load_rows, sweep_models
from test_official_checkpoints import AVAILABLE, BRAIN_ORDER, MMFORMER, code_order, inputs, mmformer_to_code, rfnet_to_code

SMOKE = ["--protocol", "non_dedicated", "--budget", "smoke", "--no-progress", "--threads", "1"]
#: (method, parameters, the code-layout writer, patch): small models in the official layouts.
CASES = {
    "rfnet": ({}, rfnet_to_code, 16),
    "mmformer": ({**MMFORMER, "fusion_order": "official"}, mmformer_to_code, 32),
}


def released(tmp_path: Path, method: str, **manifest: object) -> tuple[Path, torch.nn.Module]:
    """Weights of the project's class in the code's modality order, saved as the official code saves them, and
    their manifest; returns (manifest, the source model)."""
    params, to_code, patch = CASES[method]
    torch.manual_seed(0)
    source = registry.method_class(method)(get_task("segmentation"), BRAIN_ORDER, **params).eval()
    torch.save({"epoch": 300, "state_dict": to_code(source.state_dict(), BRAIN_ORDER)}, tmp_path / "model_last.pth")
    data = {"method": method, "params": params, "file": "model_last.pth", "sha256": file_sha256(tmp_path / "model_last.pth"),
            "source": "the authors' weights (here: made by the test)", "patch": [patch] * 3,
            "trained_on": {"dataset": "brats_synthetic", "protocol": "non_dedicated"}, **manifest}
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(data))
    return tmp_path / "manifest.yaml", source


@pytest.mark.parametrize("method", sorted(CASES))
def test_a_released_checkpoint_is_a_model_that_computes_the_released_function(tmp_path, method):
    manifest, source = released(tmp_path, method)
    sweep = tmp_path / "results" / "released"
    size = ["--dataset-param", "size=32"] if method == "mmformer" else []
    assert main(["evaluate", str(sweep), "--released", str(manifest), *SMOKE[:4], *size, "--no-progress", "--threads", "1"]) == 0
    (folder,) = sweep_models(sweep)
    model = folder.spec()
    assert folder.model_id.startswith(f"{method}_released_") and model.released["sha256"] == file_sha256(tmp_path / "model_last.pth")
    assert len(load_rows(sweep)) > 0 and folder.scores()[0].spec().subsets[-1] == "FLAIR+T1+T1c+T2"
    dataset = registry.dataset_class("brats_synthetic")(size=32)
    loaded = load_model(folder, model, dataset, Execution(progress=False, channels_last=False)).eval()
    x = inputs(CASES[method][2], torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, AVAILABLE).logits.softmax(1),
                                   source(code_order(x, BRAIN_ORDER), code_order(AVAILABLE, BRAIN_ORDER)).logits.softmax(1),
                                   atol=1e-5, rtol=0)
    assert tuple(loaded.modalities) == MODS


def test_weights_that_are_not_the_released_ones_are_refused_in_one_line(tmp_path, capsys):
    manifest, _ = released(tmp_path, "rfnet", sha256="0" * 64)
    sweep = tmp_path / "results" / "released"
    assert main(["evaluate", str(sweep), "--released", str(manifest), *SMOKE[:4]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{manifest}: sha256:" in err and "refusing weights that are not the released ones" in err
    assert not sweep.exists()


@pytest.mark.parametrize("change, message", [
    ({"params": {"width": "wide"}}, "params: parameter width='wide'"),
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"patch": None}, "patch=None: expected a list"),
])
def test_a_bad_manifest_is_refused_in_one_line(tmp_path, capsys, change, message):
    manifest, _ = released(tmp_path, "rfnet", **change)
    assert main(["evaluate", str(tmp_path / "r"), "--released", str(manifest), *SMOKE[:4]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not (tmp_path / "r").exists()
