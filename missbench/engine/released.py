"""Released checkpoints as models: a manifest names the method, its parameters, the weights file with its
SHA-256, where the weights come from and what they were trained on; `import_released` checks the file,
maps its state dict through the method's loader (`Method.official_state_dict`), and writes a finished
model folder that `bench.py evaluate` scores like any other. Its identity is the method, its parameters
and the file's SHA-256 (`ModelSpec.released`); it has no training of its own.

    # released/mmformer_split1.yaml
    method: mmformer
    params: {}                         # method parameters (the paper's defaults when empty)
    file: model_last.pth               # beside the manifest, or an absolute path
    sha256: 3b0c...                    # of the file
    key: state_dict                    # the entry holding the state dict (default: state_dict when present)
    patch: [128, 128, 128]             # the training patch: the scoring windows (segmentation)
    source: https://github.com/YaoZhang93/mmFormer (the authors' BraTS 2018 split-1 weights)
    trained_on: {dataset: brats2018, protocol: brats2018_a, split: split 1, dataset_params: {split: ...}}
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import yaml

from missbench.core.params import ParamError, check_params, normalised
from missbench.engine.context import build_method
from missbench.engine.run import provenance_meta
from missbench.core.execution import Execution
from missbench.core.method import count_parameters
from missbench.experiment import registry
from missbench.experiment.protocol import code_of
from missbench.experiment.spec import TRAINING_VERSION, ModelSpec
from missbench.store.run_folder import ModelFolder, file_sha256

#: Manifest keys: required ones, then optional ones with their types.
REQUIRED = {"method": str, "file": str, "sha256": str, "source": str, "trained_on": dict}
OPTIONAL = {"params": dict, "key": str, "patch": list}


class ReleasedError(ValueError):
    """A manifest or weights file that cannot be imported; one line naming the file and field."""


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at ``path``, every field checked (one-line errors naming the file and the field)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ReleasedError(f"{path}: cannot read the manifest ({type(e).__name__}: {' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise ReleasedError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    for key, kind in REQUIRED.items():
        if key not in data:
            raise ReleasedError(f"{path}: missing required key {key!r} (required: {', '.join(REQUIRED)})")
    for key, value in data.items():
        kind = REQUIRED.get(key) or OPTIONAL.get(key)
        if kind is None:
            raise ReleasedError(f"{path}: unknown key {key!r}; expected one of {sorted({**REQUIRED, **OPTIONAL})}")
        if not isinstance(value, kind):
            raise ReleasedError(f"{path}: {key}={value!r}: expected a {kind.__name__}")
    if "dataset" not in data["trained_on"]:
        raise ReleasedError(f"{path}: trained_on: missing required key 'dataset' (the data set whose modalities it reads)")
    return data


def import_released(manifest: Path, sweep: Path) -> ModelFolder:
    """Check a released checkpoint against its manifest and write it into ``sweep`` as a finished model (done
    before: kept as it is). Refuses a file whose SHA-256 differs from the manifest's, in one line."""
    data = read_manifest(manifest)
    cls = registry.method_class(data["method"])
    dataset_cls = registry.dataset_class(data["trained_on"]["dataset"])
    params = data.get("params", {})
    try:
        check_params(f"{manifest}: params", params, cls.defaults, cls.constraints)
    except ParamError as e:
        raise ReleasedError(str(e)) from None
    file = Path(data["file"]) if Path(data["file"]).is_absolute() else manifest.parent / data["file"]
    if not file.exists():
        raise ReleasedError(f"{manifest}: file: {file} does not exist")
    digest = file_sha256(file)
    if digest != data["sha256"].lower():
        raise ReleasedError(f"{manifest}: sha256: {file} has SHA-256 {digest}, the manifest says {data['sha256']}; "
                            f"refusing weights that are not the released ones")
    if dataset_cls.task == "segmentation" and "patch" not in data:
        raise ReleasedError(f"{manifest}: missing key 'patch' (the training patch, the scoring windows of a segmentation model)")
    model = ModelSpec(
        method=cls.name, method_params=normalised(params, cls.defaults), dataset=dataset_cls.name, dataset_params={},
        train_subset=None, seed=0, budget={"patch": data.get("patch")},
        code={"method": code_of(cls), "dataset": code_of(dataset_cls), "version": TRAINING_VERSION},
        released={"sha256": digest, "file": file.name, "source": data["source"], "trained_on": data["trained_on"]},
    )
    folder = ModelFolder(sweep / model.model_id)
    if folder.is_done():
        return folder
    method = build_method(model, dataset_cls)
    loaded = torch.load(file, map_location="cpu", weights_only=True)
    key = data.get("key", "state_dict" if isinstance(loaded, dict) and "state_dict" in loaded else None)
    state = loaded[key] if key is not None else loaded
    try:
        weights = method.official_state_dict(state)
        method.load_state_dict(weights, strict=True)
    except (KeyError, RuntimeError, ValueError, NotImplementedError) as e:
        raise ReleasedError(f"{manifest}: {file} does not load into {cls.name} ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:300]})") from None
    with folder.claim():
        folder.start(model, fresh=True)
        folder.save_checkpoint({"model": method.state_dict(), "step": 0})
        folder.finish({"model_id": model.model_id, "model": model.to_dict(), "labels": {}, "released": model.released,
                       "dataset_params": data["trained_on"].get("dataset_params", {}), "method_citation": cls.citation,
                       "parameters": count_parameters(method), "method_params_resolved": method.params,
                       "imported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       **provenance_meta(Execution(progress=False), (cls, dataset_cls), "")})
    return folder
