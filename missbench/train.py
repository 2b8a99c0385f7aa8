"""Training: seeded patch sampling, modality dropping, the method's optimiser and schedule, checkpoints.

A run checkpoints every ``budget.checkpoint_every`` iterations and at the end (model, optimiser,
step and every RNG state, written atomically), and a rerun resumes from the last checkpoint with
the same numbers an uninterrupted run would give.
"""

from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from missbench.dataset import Case
from missbench.dropout import draw_available, zero_missing
from missbench.method import Method, TrainingDefaults
from missbench.spec import Execution, RunSpec
from missbench.subsets import parse_subset

log = logging.getLogger("missbench")

#: Share of patches centred on a tumour voxel (ShaSpec's BraTSDataSet: a class-centred crop with p = 0.5).
FOREGROUND_PROB = 0.5


def lr_factor(schedule: str, step: int, total: int, step_every: float = 1 / 6, step_gamma: float = 0.25) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total``."""
    t = min(step / max(total, 1), 1.0)
    if schedule == "step":
        return step_gamma ** math.floor(t / step_every + 1e-9)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "poly":
        return (1 - t) ** 0.9
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}; expected cosine, poly, constant or step")


def make_optimizer(method: Method, cfg: TrainingDefaults) -> torch.optim.Optimizer:
    params = [p for p in method.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected sgd or adam")


class PatchSampler:
    """Random training patches with random flips; half of them centred on a tumour voxel."""

    def __init__(self, cases: list[Case], patch: tuple[int, int, int], rng: np.random.Generator) -> None:
        self.cases, self.patch, self.rng = cases, patch, rng
        self.foreground = [np.argwhere(c.target > 0) for c in cases]

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = [], []
        for _ in range(batch):
            i = int(self.rng.integers(len(self.cases)))
            case, fg = self.cases[i], self.foreground[i]
            shape = case.target.shape
            if len(fg) and self.rng.random() < FOREGROUND_PROB:
                centre = fg[self.rng.integers(len(fg))]
                start = [int(np.clip(c - p // 2, 0, max(s - p, 0))) for c, p, s in zip(centre, self.patch, shape)]
            else:
                start = [int(self.rng.integers(max(s - p, 0) + 1)) for p, s in zip(self.patch, shape)]
            sl = tuple(slice(a, a + p) for a, p in zip(start, self.patch))
            img, tgt = case.image[(slice(None), *sl)], case.target[sl]
            for axis in range(3):
                if self.rng.random() < 0.5:
                    img, tgt = np.flip(img, axis + 1), np.flip(tgt, axis)
            pad = [(0, p - s) for p, s in zip(self.patch, tgt.shape)]
            images.append(np.pad(img, [(0, 0), *pad]))
            targets.append(np.pad(tgt, pad))
        return torch.from_numpy(np.stack(images)).float(), torch.from_numpy(np.stack(targets).astype(np.int64))


def _save_atomic(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def train(
    method: Method,
    cases: list[Case],
    spec: RunSpec,
    cfg: TrainingDefaults,
    run_dir: Path,
    exe: Execution,
) -> dict[str, float]:
    """Train ``method`` for the spec's budget, resuming from ``run_dir/checkpoint.pt`` if present."""
    budget = spec.budget
    optimizer = make_optimizer(method, cfg)
    rng = np.random.default_rng(spec.derived_seed)
    gen = torch.Generator().manual_seed(spec.derived_seed)
    ckpt_path = run_dir / "checkpoint.pt"
    step = 0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=exe.torch_device, weights_only=False)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        gen.set_state(state["torch_rng"])
        step = state["step"]
        log.info("resumed from %s at iteration %d", ckpt_path, step)
    sampler = PatchSampler(cases, budget.patch, rng)
    fixed = parse_subset(spec.train_subset, method.modalities).mask if spec.train_subset else None
    warmup = int(round(cfg.warmup_fraction * budget.iterations))
    m = method.n_modalities
    method.train()
    bar = tqdm(total=budget.iterations, initial=step, desc=f"train {spec.method}", disable=not exe.progress, leave=False)
    last: dict[str, float] = {}
    while step < budget.iterations:
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(cfg.schedule, step, budget.iterations, cfg.step_every, cfg.step_gamma)
        x, y = sampler.sample(budget.batch)
        if fixed is not None:
            available = torch.tensor([fixed] * budget.batch)
        else:
            available = draw_available("full" if step < warmup else cfg.dropout, budget.batch, m, gen)
        x = zero_missing(x, available)
        x, y, available = exe.prepare(x), y.to(exe.device), available.to(exe.device)
        method.set_step(step, budget.iterations)
        out = method(x, available, y)
        loss = sum(out.losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{spec.method}: loss is {loss.item()} at iteration {step} ({ {k: v.item() for k, v in out.losses.items()} })")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        bar.update(1)
        if step % budget.log_every == 0 or step == budget.iterations:
            last = {k: round(v.item(), 4) for k, v in out.losses.items()} | {"total": round(loss.item(), 4)}
            bar.set_postfix(last)
            log.info("iteration %d lr %.3g %s", step, optimizer.param_groups[0]["lr"], last)
        if step % budget.checkpoint_every == 0 or step == budget.iterations:
            _save_atomic({
                "model": method.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "numpy_rng": rng.bit_generator.state, "torch_rng": gen.get_state(),
            }, ckpt_path)
    bar.close()
    return last
