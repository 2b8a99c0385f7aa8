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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from missbench.core.dataset import Case, Samples
from missbench.core.availability import draw_available
from missbench.engine.evaluate import EVAL_BATCH
from missbench.core.availability import Inputs, zero_inputs
from missbench.core.method import Method, TrainingDefaults
from missbench.engine.profile import PhaseTimer
from missbench.experiment.spec import Execution, RunSpec
from missbench.core.subsets import parse_subset

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
        # int32 voxel indices: half the memory of int64 (0.7 GB of tumour-voxel indices over 285 real BraTS cases)
        self.foreground = [np.argwhere(c.target > 0).astype(np.int32) for c in cases]

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


class SampleSampler:
    """Classification training batches: epochs over a seeded permutation of the training split.

    Stateless given the iteration (epoch e's order comes from (seed, e)), so a resume needs no state.
    """

    def __init__(self, samples: Samples, seed: int) -> None:
        self.samples, self.seed = samples, seed
        self._orders: dict[int, np.ndarray] = {}

    def indices(self, step: int, batch: int) -> np.ndarray:
        n = len(self.samples)
        out = []
        for pos in range(step * batch, (step + 1) * batch):
            epoch = pos // n
            if epoch not in self._orders:
                self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(n)}
            out.append(self._orders[epoch][pos % n])
        return np.asarray(out)

    def take(self, idx: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor]:
        return [torch.from_numpy(a[idx]).float() for a in self.samples.x], torch.from_numpy(self.samples.y[idx].astype(np.int64))


@dataclass
class Selection:
    """Model selection on the validation split: ``score(method)`` (higher is better) every ``period``
    iterations after the method's last stage and at the end; the best weights are kept (in the
    checkpoint too) and restored after training."""

    score: Callable[[Method], float]
    period: int
    best_step: int = -1
    best_score: float = -math.inf
    best_model: dict[str, torch.Tensor] | None = None
    history: list[tuple[int, float]] = field(default_factory=list)

    def update(self, step: int, method: Method) -> None:
        method.eval()
        with torch.inference_mode():
            value = float(self.score(method))
        method.train()
        self.history.append((step, value))
        if value > self.best_score:
            self.best_step, self.best_score = step, value
            self.best_model = {k: v.detach().clone() for k, v in method.state_dict().items()}
        log.info("iteration %d validation score %.4f (best %.4f at iteration %d)", step, value, self.best_score, self.best_step)

    def state(self) -> dict[str, Any]:
        return {"best_step": self.best_step, "best_score": self.best_score, "best_model": self.best_model, "history": list(self.history)}

    def load(self, state: dict[str, Any]) -> None:
        self.best_step, self.best_score, self.best_model = state["best_step"], state["best_score"], state["best_model"]
        self.history = list(state["history"])


#: Training patches (segmentation) that a method's `fit_stage` sees; the same seeded set every time.
STAGE_PATCHES = 32


#: Saves the running ``train`` call's state at its last iteration boundary (None when none runs);
#: set while training so a preemption handler can checkpoint between periodic checkpoints.
_live_saver: Callable[[], bool] | None = None


def save_live_state() -> bool:
    """Write the running training's state at its last iteration boundary to its checkpoint.pt.

    For a preemption signal handler (missbench/executors/task.py). Returns False, leaving the last
    periodic checkpoint as it is, when no training runs or the optimiser is mid-update; either way a
    resume gives the numbers of an uninterrupted run."""
    return _live_saver() if _live_saver is not None else False


def _save_atomic(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def train(
    method: Method,
    cases: list[Case] | Samples,
    spec: RunSpec,
    cfg: TrainingDefaults,
    run_dir: Path,
    exe: Execution,
    masks: np.ndarray | None = None,
    selection: Selection | None = None,
    timer: PhaseTimer | None = None,
) -> dict[str, float]:
    """Train ``method`` for the spec's budget, resuming from ``run_dir/checkpoint.pt`` if present.

    ``cases`` are segmentation cases (random patches) or a classification split (`Samples`).
    ``masks`` (N x M, classification) fix each training sample's availability (the protocol's
    missing-rate masks) instead of the random dropping scheme. With a ``selection``, the weights
    that score best on it are loaded at the end. The method's stages (`Method.stage_steps`) are fit
    once each when training reaches them; a resume does not refit a stage already passed.
    """
    budget = spec.budget
    timer = timer or PhaseTimer()
    optimizer = make_optimizer(method, cfg)
    rng = np.random.default_rng(spec.derived_seed)
    gen = torch.Generator().manual_seed(spec.derived_seed)
    ckpt_path = run_dir / "checkpoint.pt"
    step, state = 0, {}
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=exe.torch_device, weights_only=False)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        gen.set_state(state["torch_rng"])
        step = state["step"]
        _restore_extra(method, state, selection)
        log.info("resumed from %s at iteration %d", ckpt_path, step)
    stages_done = state.get("stages_done", 0)
    stage_steps = method.stage_steps(budget.iterations)
    fixed = parse_subset(spec.train_subset, method.modalities).mask if spec.train_subset else None
    sample, stage_batches = batch_sources(method, cases, spec, fixed, masks, rng, exe)
    warmup = int(round(cfg.warmup_fraction * budget.iterations))
    m = method.n_modalities
    method.train()

    def checkpoint(**captured: Any) -> None:
        """Write the current state to checkpoint.pt; ``captured`` replaces parts taken earlier (the iteration boundary)."""
        _save_atomic({
            "model": method.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "numpy_rng": rng.bit_generator.state, "torch_rng": gen.get_state(), "torch_global_rng": torch.get_rng_state(),
            "stages_done": stages_done, "frozen": [n for n, p in method.named_parameters() if not p.requires_grad],
            "selection": selection.state() if selection is not None else None,
        } | captured, ckpt_path)

    # The state at the start of the current iteration: parameters and optimiser change only in
    # optimizer.step(), so until then they plus these RNG states and buffers are that state (stages,
    # frozen parameters and model selection change only between iterations).
    buffer_names = set(method.state_dict()) - {n for n, _ in method.named_parameters()}
    boundary: dict[str, Any] = {}

    def save_boundary() -> bool:
        if not boundary:
            return False
        checkpoint(**{k: v for k, v in boundary.items() if k != "buffers"}, model=method.state_dict() | boundary["buffers"])
        log.info("saved the state at iteration %d on request", boundary["step"])
        return True

    global _live_saver
    _live_saver = save_boundary
    bar = tqdm(total=budget.iterations, initial=step, desc=f"train {spec.method}", disable=not exe.progress, leave=False)
    last: dict[str, float] = {}
    while True:
        while stages_done < len(stage_steps) and stage_steps[stages_done] <= step:
            boundary.clear()
            method.eval()
            with torch.no_grad():
                method.fit_stage(stages_done, stage_batches)
            method.train()
            stages_done += 1
            log.info("fit stage %d at iteration %d", stages_done - 1, step)
            checkpoint()
        if step >= budget.iterations:
            break
        buffers = {k: v.clone() for k, v in method.state_dict().items() if k in buffer_names} if buffer_names else {}
        boundary.update(step=step, numpy_rng=rng.bit_generator.state, torch_rng=gen.get_state(),
                        torch_global_rng=torch.get_rng_state(), buffers=buffers)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(cfg.schedule, step, budget.iterations, cfg.step_every, cfg.step_gamma)
        with timer.phase("data"):
            x, y, drawn = sample(step)
            if drawn is not None:
                available = drawn
            elif fixed is not None:
                available = torch.tensor([fixed] * budget.batch)
            else:
                available = draw_available("full" if step < warmup else cfg.dropout, budget.batch, m, gen)
            x = zero_inputs(x, available)
            x, y, available = exe.prepare(x), y.to(exe.device), available.to(exe.device)
        method.set_step(step, budget.iterations)
        with timer.phase("forward"), exe.autocast():
            out = method(x, available, y)
            loss = sum(out.losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{spec.method}: loss is {loss.item()} at iteration {step} ({ {k: v.item() for k, v in out.losses.items()} })")
        optimizer.zero_grad(set_to_none=True)
        with timer.phase("backward"):
            loss.backward()
        boundary.clear()  # from here until the next iteration the live state is mid-update
        with timer.phase("optimiser"):
            optimizer.step()
        step += 1
        bar.update(1)
        if step % budget.log_every == 0 or step == budget.iterations:
            last = {k: round(v.item(), 4) for k, v in out.losses.items()} | {"total": round(loss.item(), 4)}
            bar.set_postfix(last)
            log.info("iteration %d lr %.3g %s", step, optimizer.param_groups[0]["lr"], last)
        # Only the method's last stage is the method (SMIL's pre-training, UL4M4's encoder stage are not).
        selectable = step > (stage_steps[-1] if stage_steps else 0)
        if selection is not None and selectable and (step % selection.period == 0 or step == budget.iterations):
            with timer.phase("validation"):
                selection.update(step, method)
        if step % budget.checkpoint_every == 0 or step == budget.iterations:
            with timer.phase("checkpoint"):
                checkpoint()
    bar.close()
    _live_saver = None
    if selection is not None and selection.best_model is not None:
        method.load_state_dict(selection.best_model)
        log.info("selected the weights of iteration %d (validation score %.4f)", selection.best_step, selection.best_score)
    return last


def _restore_extra(method: Method, state: dict[str, Any], selection: Selection | None) -> None:
    """Restore what a checkpoint holds besides model, optimiser and sampling RNGs (older checkpoints lack it)."""
    if "torch_global_rng" in state:
        torch.set_rng_state(state["torch_global_rng"])
    frozen = set(state.get("frozen", ()))
    for name, p in method.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
    if selection is not None and state.get("selection"):
        selection.load(state["selection"])


Batch = tuple[Inputs, torch.Tensor, torch.Tensor | None]


def batch_sources(
    method: Method, data: list[Case] | Samples, spec: RunSpec, fixed: tuple[bool, ...] | None,
    masks: np.ndarray | None, rng: np.random.Generator, exe: Execution,
) -> tuple[Callable[[int], Batch], Callable[[], Iterator[tuple[Inputs, torch.Tensor, torch.Tensor]]]]:
    """The task's training batches and the data a stage sees.

    Returns ``sample(step) -> (x, y, available or None)`` (None: the trainer draws availability) and
    ``stage_batches()`` for `Method.fit_stage`: the whole classification split once in fixed order,
    or `STAGE_PATCHES` seeded segmentation patches, with their training availability (the fixed
    subset or masks; every modality under random dropping), harness-zeroed, on the device.
    """
    batch, m = spec.budget.batch, method.n_modalities
    every = torch.tensor([fixed or (True,) * m])
    if isinstance(data, Samples):
        sampler = SampleSampler(data, spec.derived_seed)

        def sample(step: int) -> Batch:
            idx = sampler.indices(step, batch)
            x, y = sampler.take(idx)
            return x, y, torch.from_numpy(masks[idx]) if masks is not None else None

        def chunks() -> Iterator[tuple[Inputs, torch.Tensor, torch.Tensor]]:
            for start in range(0, len(data), EVAL_BATCH):
                idx = np.arange(start, min(start + EVAL_BATCH, len(data)))
                yield *sampler.take(idx), torch.from_numpy(masks[idx]) if masks is not None else every.expand(len(idx), -1)
    else:
        if masks is not None:
            raise ValueError("per-sample availability masks apply to classification data sets only")
        patches = PatchSampler(data, spec.budget.patch, rng)

        def sample(step: int) -> Batch:
            return *patches.sample(batch), None

        def chunks() -> Iterator[tuple[Inputs, torch.Tensor, torch.Tensor]]:
            fixed_set = PatchSampler(data, spec.budget.patch, np.random.default_rng([spec.derived_seed, 1]))
            for start in range(0, STAGE_PATCHES, batch):
                n = min(batch, STAGE_PATCHES - start)
                yield *fixed_set.sample(n), every.expand(n, -1)

    def stage_batches() -> Iterator[tuple[Inputs, torch.Tensor, torch.Tensor]]:
        for x, y, available in chunks():
            yield exe.prepare(zero_inputs(x, available)), available.to(exe.device), y.to(exe.device)

    return sample, stage_batches
