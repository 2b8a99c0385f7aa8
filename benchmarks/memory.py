#!/usr/bin/env python
"""Peak memory of training and of the 15-subset evaluation, per method.

    python benchmarks/memory.py --methods shaspec,hemis,zero_fill [--device cuda]

Each (method, phase) runs in a fresh subprocess so that peaks do not leak between them. On CPU the
figure is the process's peak resident set size (ru_maxrss) above the peak reached after building
the model and loading the data, labelled "RSS"; on a GPU it is `torch.cuda.max_memory_allocated`
during the phase. Training runs the default budget's batch and patch for a few iterations;
evaluation scores one default-size case on all 15 subsets with shared encoding.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from missbench.core.execution import Execution  # noqa: E402
from missbench.core.subsets import parse_subset  # noqa: E402
from missbench.core.tasks.segmentation import Cases  # noqa: E402
from missbench.engine.context import build, eval_settings  # noqa: E402
from missbench.engine.train import train  # noqa: E402
from missbench.experiment import registry  # noqa: E402
from missbench.experiment.protocol import load_protocol  # noqa: E402
from missbench.store.run_folder import ModelFolder  # noqa: E402


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(method: str, phase: str, device: str, iterations: int) -> dict[str, float]:
    """Measure one phase in this process; returns {"peak_mib": ..., "kind": ...}."""
    proto = load_protocol(registry.protocol_path("non_dedicated"))
    spec = proto.expand([method], registry.dataset_class("brats_synthetic"), {}, "default")[0]
    spec = spec.with_budget(iterations=iterations, checkpoint_every=iterations)
    exe = Execution(device=device, progress=False)
    dataset, model = build(spec)
    model.to(exe.torch_device, memory_format=torch.channels_last_3d)
    cfg = type(model).training_for("segmentation").replace(warmup_fraction=0.0)
    ids = dataset.case_ids("train")[:8] if phase == "train" else dataset.case_ids("test")[:1]
    cases = Cases(ids, dataset.load)
    subsets = [parse_subset(s, dataset.modalities) for s in spec.score.subsets]
    cuda = exe.torch_device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        if phase == "train":
            train(model, model.task, cases, None, spec, cfg, ModelFolder(Path(tmp)), exe)
        else:
            model.task.evaluate(model, cases, subsets, eval_settings(spec.model, spec.score, dataset), exe)
    if cuda:
        torch.cuda.synchronize()
        return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20, "kind": "CUDA allocated"}
    return {"peak_mib": rss_mib() - base, "kind": "RSS above setup"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="shaspec,hemis,zero_fill")
    p.add_argument("--device", default="cpu")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--child", nargs=2, metavar=("METHOD", "PHASE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.device, args.iterations)))
        return 0
    print(f"torch {torch.__version__}, device {args.device}, default budget's batch and patch, one 48^3 case x 15 subsets")
    print(f"{'method':<12} {'train MiB':>10} {'eval MiB':>10}  measure")
    for name in args.methods.split(","):
        out = {}
        for phase in ("train", "eval"):
            res = subprocess.run([sys.executable, __file__, "--child", name, phase, "--device", args.device,
                                  "--iterations", str(args.iterations)], capture_output=True, text=True)
            if res.returncode:
                print(f"{name:<12} failed in {phase}: {res.stderr.strip().splitlines()[-1]}")
                break
            out[phase] = json.loads(res.stdout.strip().splitlines()[-1])
        else:
            print(f"{name:<12} {out['train']['peak_mib']:10.0f} {out['eval']['peak_mib']:10.0f}  {out['train']['kind']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
