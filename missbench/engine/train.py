"""Training: the method's optimiser and schedule over the task's batches (missbench/engine/batches.py:
drawn ahead in a background thread, in the same order), modality dropping, the method's stages, model
selection and checkpoints (missbench/engine/checkpoint.py: a rerun resumes with the numbers an
uninterrupted run gives).

`train_step` is the one training step and `make_optimizer` its optimiser: the timing protocol times
exactly these.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from missbench.core.availability import TRAINING_SCHEMES, Inputs, zero_inputs
from missbench.core.execution import Execution, PhaseTimer
from missbench.core.method import Method, Output
from missbench.core.subsets import parse_subset
from missbench.core.tasks import Task
from missbench.core.tasks.base import Batches
from missbench.core.training import TrainingDefaults
from missbench.engine.batches import BatchStream, SamplingRNG, draw_batch
from missbench.engine.checkpoint import Checkpointer
from missbench.engine.selection import Selection
from missbench.experiment.spec import RunSpec
from missbench.store.run_folder import ModelFolder

log = logging.getLogger("missbench")


class MethodError(ValueError):
    """A method that breaks the contract (missbench/core/method.py) at run time."""


def train_step(method: Method, optimizer: torch.optim.Optimizer, x: Inputs, y: torch.Tensor, available: torch.Tensor,
               exe: Execution, timer: PhaseTimer, before_update: Callable[[], None] | None = None) -> tuple[Output, torch.Tensor]:
    """One iteration on a prepared batch: forward (under the execution's autocast), the summed loss
    terms, backward and the optimiser step; ``before_update`` runs just before the parameters change."""
    with timer.phase("forward"), exe.autocast():
        out = method.training_output(x, available, y)
        channels = method.task.out_channels(method.output)
        if out.logits.ndim < 2 or out.logits.shape[1] != channels:
            raise MethodError(f"method {method.name!r}: logits of shape {tuple(out.logits.shape)}; the {method.task.name} "
                              f"task's {method.output!r} output needs {channels} channels in dimension 1")
        if not out.losses:
            raise MethodError(f"method {method.name!r} returned no loss terms in training; with own_task_loss = True it adds "
                              f"its task loss itself (Output.losses.update(self.task_loss(logits, target))) whenever a target is given")
        for name, term in out.losses.items():
            if not isinstance(name, str) or not name or not isinstance(term, torch.Tensor) or term.ndim != 0:
                raise MethodError(f"method {method.name!r}: loss term {name!r} is not a named scalar tensor")
        loss = sum(out.losses.values())
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{method.name}: loss is {loss.item()} at iteration {method.step} "
                                 f"({ {k: v.item() for k, v in out.losses.items()} })")
    optimizer.zero_grad(set_to_none=True)
    with timer.phase("backward"):
        loss.backward()
    if before_update is not None:
        before_update()
    with timer.phase("optimiser"):
        optimizer.step()
    return out, loss


def make_optimizer(method: Method, cfg: TrainingDefaults, exe: Execution) -> torch.optim.Optimizer:
    """The method's optimiser over its trainable parameters, fused if the execution says so."""
    return cfg.make_optimizer((p for p in method.parameters() if p.requires_grad), fused=exe.fused_optimizer)


def fit_stage(method: Method, index: int, batches: Batches, every: torch.Tensor, exe: Execution) -> None:
    """The method's stage ``index`` on the stage data, harness-zeroed, in eval mode without gradients."""
    def stage_batches() -> Any:
        for x, y, available in batches.stage(every):
            yield exe.prepare(zero_inputs(x, available)), available.to(exe.device), y.to(exe.device)

    method.eval()
    with torch.no_grad():
        method.fit_stage(index, stage_batches)
    method.train()


def train(method: Method, task: Task, data: Any, masks: np.ndarray | None, spec: RunSpec, cfg: TrainingDefaults,
          folder: ModelFolder, exe: Execution, selection: Selection | None = None, timer: PhaseTimer | None = None) -> dict[str, float]:
    """Train ``method`` on ``data`` (the task's training split) for the request's budget, resuming from the
    model folder's checkpoint; returns the last logged loss terms.

    ``masks`` (N x M) fix each training sample's availability (a missing-rate protocol) instead of
    the dropping scheme, or, under an incomplete-training scheme (per_modality, mnar), bound it: the
    method drops within the modalities each case has. The method's stages (`Method.stage_steps`) are
    fit once each when training reaches them. With a ``selection``, the weights that score best on it are loaded at the end.
    """
    budget, total, m = spec.budget, spec.budget.iterations, method.n_modalities
    timer = timer or PhaseTimer()
    optimizer = make_optimizer(method, cfg, exe)
    model, seed = spec.model, spec.model.derived_seed
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    fixed = parse_subset(model.train_subset, method.modalities).mask if model.train_subset else None
    batches = task.batches(data, budget.batch, budget.patch, rng, seed, masks, cfg.sampler)
    warmup = int(round(cfg.warmup_fraction * total))
    restrict = model.missing.get("scheme") in TRAINING_SCHEMES
    stream = BatchStream(lambda k: draw_batch(batches, k, fixed, cfg, warmup, gen, budget.batch, m, restrict),
                         SamplingRNG(rng, gen), exe, total)
    checkpoints = Checkpointer(folder, method, optimizer, stream, selection)
    step, stages_done = checkpoints.restore(exe.torch_device)
    stage_steps = method.stage_steps(total)
    every = torch.tensor([fixed or (True,) * m])
    method.train()
    bar = tqdm(total=total, initial=step, desc=f"train {model.method}", disable=not exe.progress, leave=False)
    last: dict[str, float] = {}
    with checkpoints.live(), stream.running(step):
        while True:
            while stages_done < len(stage_steps) and stage_steps[stages_done] <= step:
                checkpoints.mid_update()
                fit_stage(method, stages_done, batches, every, exe)
                stages_done += 1
                log.info("fit stage %d at iteration %d", stages_done - 1, step)
                checkpoints.save(step, stages_done)
            if step >= total:
                break
            checkpoints.mark(step, stages_done)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * cfg.lr_factor(step, total)
            with timer.phase("data_wait"):
                x, y, available = stream.take(step)
            method.set_step(step, total)
            out, loss = train_step(method, optimizer, x, y, available, exe, timer, before_update=checkpoints.mid_update)
            step += 1
            bar.update(1)
            if step % budget.log_every == 0 or step == total:
                last = {k: round(v.item(), 4) for k, v in out.losses.items()} | {"total": round(loss.item(), 4)}
                bar.set_postfix(last)
                log.info("iteration %d lr %.3g %s", step, optimizer.param_groups[0]["lr"], last)
            # Only the method's last stage is the method (SMIL's pre-training, UL4M4's encoder stage are not).
            selectable = step > (stage_steps[-1] if stage_steps else 0)
            if selection is not None and selectable and (step % selection.period == 0 or step == total):
                with timer.phase("validation"):
                    selection.update(step, method)
            if step % budget.checkpoint_every == 0 or step == total:
                with timer.phase("checkpoint"):
                    checkpoints.save(step, stages_done)
    bar.close()
    if selection is not None and selection.best_model is not None:
        method.load_state_dict(selection.best_model)
        log.info("selected the weights of iteration %d (validation score %.4f)", selection.best_step, selection.best_score)
    return last
