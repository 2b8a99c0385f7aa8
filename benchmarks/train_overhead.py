#!/usr/bin/env python
"""Harness training-step time against a bare PyTorch loop of the same model, batch and data.

    python benchmarks/train_overhead.py --methods shaspec,zero_fill --iterations 40

The harness path is `missbench.engine.train.train` (patch sampling, modality dropping, zeroing, schedule,
progress bar off, checkpoints every 20 iterations); the bare loop trains the same initial model on
pre-drawn batches with the same optimiser. Prints seconds per iteration and the ratio (target <= 1.05).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from missbench.core.availability import draw_available, zero_inputs  # noqa: E402
from missbench.core.execution import Execution  # noqa: E402
from missbench.core.tasks.segmentation import Cases, PatchSampler  # noqa: E402
from missbench.engine.context import build  # noqa: E402
from missbench.engine.train import fit_stage, train  # noqa: E402
from missbench.experiment import registry  # noqa: E402
from missbench.experiment.protocol import load_protocol  # noqa: E402
from missbench.store.run_folder import ModelFolder  # noqa: E402


def restore(method: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """The initial weights and buffers, with every parameter trainable again (a stage may freeze some)."""
    method.load_state_dict(state)
    for p in method.parameters():
        p.requires_grad_(True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="shaspec,zero_fill")
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--prefetch", action=argparse.BooleanOptionalAction, default=None, help="default: as a run on this device")
    args = p.parse_args()
    proto = load_protocol(registry.protocol_path("non_dedicated"))
    exe = Execution(progress=False, prefetch=args.prefetch)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, default budget's batch and patch, "
          f"{args.iterations} iterations after 3 warm-up")
    print(f"{'method':<12} {'harness s/it':>13} {'bare s/it':>10} {'ratio':>7}")
    for name in args.methods.split(","):
        spec = proto.expand([name], registry.dataset_class("brats_synthetic"), {}, "default")[0]
        spec = spec.with_budget(iterations=args.iterations, checkpoint_every=20)
        dataset, method = build(spec)
        ids = dataset.case_ids("train")[:8]
        cases = [dataset.load(c) for c in ids]
        cfg = type(method).training_for("segmentation").replace(warmup_fraction=0.0)
        method.to(memory_format=torch.channels_last_3d)
        state = {k: v.clone() for k, v in method.state_dict().items()}

        # Bare loop: pre-drawn batches, no sampling, no schedule, no checkpoints. The timed batches are
        # the harness's own draws (same seeds, same order), so both loops do the same work even where
        # it depends on the availability pattern (SMIL's meta step needs complete and incomplete samples).
        batches = []
        for seed, count in ((0, 3), (spec.model.derived_seed, args.iterations)):
            sampler = PatchSampler(cases, spec.budget.patch, np.random.default_rng(seed))
            gen = torch.Generator().manual_seed(seed)
            for _ in range(count):
                x, y = sampler.sample(spec.budget.batch)
                a = draw_available(cfg.dropout, spec.budget.batch, method.n_modalities, gen)
                batches.append((exe.prepare(zero_inputs(x, a)), y, a))
        opt = cfg.make_optimizer(p for p in method.parameters() if p.requires_grad)
        # A staged method (SMIL, UL4M4) fits its stages at the same iterations as in the harness.
        stages = method.stage_steps(args.iterations)
        stage_data = method.task.batches(Cases(ids, dataset.load), spec.budget.batch, spec.budget.patch,
                                         np.random.default_rng(0), spec.model.derived_seed)
        every = torch.ones(1, method.n_modalities, dtype=torch.bool)
        method.train()
        for i, (x, y, a) in enumerate(batches):
            if i == 3:
                t0 = time.perf_counter()
            if i - 3 in stages:
                fit_stage(method, stages.index(i - 3), stage_data, every, exe)
            loss = sum(method.training_output(x, a, y).losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        bare = (time.perf_counter() - t0) / args.iterations

        restore(method, state)
        with tempfile.TemporaryDirectory() as tmp:
            folder, data = ModelFolder(Path(tmp)), Cases(ids, dataset.load)
            warm = spec.with_budget(iterations=3)
            train(method, method.task, data, None, warm, cfg, folder, exe)
            folder.checkpoint_path.unlink()
            restore(method, state)
            t0 = time.perf_counter()
            train(method, method.task, data, None, spec, cfg, folder, exe)
            harness = (time.perf_counter() - t0) / args.iterations
        print(f"{name:<12} {harness:13.4f} {bare:10.4f} {harness / bare:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
