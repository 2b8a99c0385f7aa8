"""The Method contract (missbench/core/method.py), checked on toy data: what ``bench.py check NAME`` runs
(the role ``benchopt test`` plays for solvers) and what every method's tests call.

Each ``check_*`` function takes a method, or its class and parameters, and toy data of one task, and
raises `ContractViolation` (an AssertionError, so the tests' helpers are these very checks) saying
what went wrong. `check_method` runs them all for every task a method declares and returns a
`Finding` per (task, check), with a one-line fix hint for each failure.

Toy data: on segmentation, random 16^3 volumes of the four BraTS modalities with nested tumour
regions; on classification, an image, a spectrogram and a table row per sample, each carrying the
label. Training runs the engine's own `train_step` (and `fit_stage` at the method's stages), with
Adam at 3e-3 instead of the method's optimiser, so that every method can show falling losses in a
few steps.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from missbench.core.availability import Inputs, batch_size, draw_available, zero_inputs
from missbench.core.execution import Execution, PhaseTimer
from missbench.core.inference import subset_predictor
from missbench.core.method import Method, count_on_meta, count_parameters, declaration_problem
from missbench.core.subsets import all_subsets
from missbench.core.tasks import Task, get_task
from missbench.engine.train import MethodError, fit_stage, train_step

#: The toy tasks' modalities: BraTS's four sequences; an image, a spectrogram and a table row.
SEGMENTATION_MODALITIES = ("FLAIR", "T1", "T1c", "T2")
CLASSIFICATION_INPUTS = {"image": ("image", (1, 28, 28)), "audio": ("spectrogram", (1, 20, 20)), "table": ("tabular", (6,))}
#: Output conventions a method may declare per task.
#: Training steps of the loss check, and its optimiser's learning rate.
LOSS_STEPS, TOY_LR = 24, 3e-3
#: Tolerance of "the same prediction" (torch.testing's float32 defaults); `check_task` allows float sums in
#: another order (shared encoding) a relative 1e-4.
RTOL, ATOL = 1.3e-6, 1e-5


class ContractViolation(AssertionError):
    """A method that breaks the contract; the message says how."""


@dataclass(frozen=True)
class Finding:
    """One check of one task: passed, failed (``detail`` says why) or not applicable (``passed`` None)."""

    task: str
    check: str
    passed: bool | None
    detail: str = ""

    @property
    def hint(self) -> str:
        """The one-line fix of a failure."""
        return HINTS[self.check]


HINTS = {
    "declaration": "set name, tasks, outputs = {task: 'regions' | 'labels'} and defaults; constraints only for "
                   "declared defaults, each allowing its default (missbench/core/params.py)",
    "parameters": "build every layer in __init__ from (task, modalities, **params) with torch's factories (no .to(), "
                  "no data-dependent sizes), so `bench.py list` can count it on the meta device",
    "patterns": "return Output(logits) with logits B x task.out_channels(self.output) x D x H x W (classification: "
                "B x n_classes), finite, for every non-empty availability pattern",
    "ignores missing": "entry m of encode(x) must depend on modality m alone (x[:, m]; x[m] on classification); "
                       "fuse only the available ones in decode, using `available`",
    "shared encoding": "decode(encode(x), available) must give forward(x, available); if it cannot, return None from "
                       "encode and override forward",
    "same seed": "draw all randomness from torch's global generator (no numpy/random, no clock), in __init__ and forward",
    "losses": "the engine adds the task loss of the logits; a method with own_task_loss = True adds it itself "
              "(out.losses.update(self.task_loss(logits, target))); weight each named term; every term a finite scalar tensor",
    "checkpoint": "keep everything the output depends on in parameters or buffers (register_buffer), so state_dict carries it",
}
CHECKS = tuple(HINTS)


# --- toy data -------------------------------------------------------------------------------------------

def toy_task(name: str, modalities: tuple[str, ...] | None = None, n_classes: int = 4) -> tuple[Task, tuple[str, ...]]:
    """The task ``name`` and its toy modalities (classification: those of ``CLASSIFICATION_INPUTS`` named in
    ``modalities``, default all three)."""
    if name == "segmentation":
        return get_task(name), SEGMENTATION_MODALITIES
    mods = modalities or tuple(CLASSIFICATION_INPUTS)
    return get_task(name, n_classes=n_classes, inputs={m: CLASSIFICATION_INPUTS[m] for m in mods}), mods


def segmentation_batch(batch: int = 2, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 4-modality volumes (B x 4 x S^3) and a label map with nested regions (2 around 1 around 4)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, len(SEGMENTATION_MODALITIES), size, size, size, generator=g)
    y = torch.zeros(batch, size, size, size, dtype=torch.long)
    c = size // 2
    y[:, c - 5 : c + 5, c - 5 : c + 5, c - 5 : c + 5] = 2
    y[:, c - 3 : c + 3, c - 3 : c + 3, c - 3 : c + 3] = 1
    y[:, c - 1 : c + 2, c - 1 : c + 2, c - 1 : c + 2] = 4
    return x, y


def classification_batch(task: Task, batch: int = 8, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-modality inputs (B x shape) that each carry the label (a class-dependent offset plus noise), and labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(batch) % task.n_classes
    x = []
    for spec in task.inputs.values():
        signal = torch.randn(task.n_classes, *spec.shape, generator=g)
        x.append(signal[y] + 0.3 * torch.randn(batch, *spec.shape, generator=g))
    return x, y


def toy_batch(task: Task) -> tuple[Inputs, torch.Tensor]:
    """A toy batch of ``task``; on segmentation FLAIR shows the tumour, so the task can be learnt from it."""
    if task.name != "segmentation":
        return classification_batch(task)
    x, y = segmentation_batch()
    x[:, 0] += 3 * (y > 0)
    return x, y


def random_availability(batch: int, n_modalities: int, seed: int = 0) -> Callable[[int], torch.Tensor]:
    """Per step, a random availability (kept count, then subset; seeded) in which the first sample keeps the
    first modality, so the toy task stays learnable."""
    gen = torch.Generator().manual_seed(seed)

    def at(step: int) -> torch.Tensor:
        available = draw_available("count_then_subset", batch, n_modalities, gen)
        available[0, 0] = True
        return available

    return at


def _differs_where_missing(x: Inputs, mask: tuple[bool, ...]) -> Inputs:
    """``x`` changed a lot in the modalities ``mask`` leaves out, and only there."""
    if isinstance(x, torch.Tensor):
        return x + 3 * (~torch.tensor(mask)).view(1, -1, *[1] * (x.ndim - 2))
    return [xm + 3 * (not kept) for xm, kept in zip(x, mask)]


# --- the checks ------------------------------------------------------------------------------------------

def check_declaration(cls: type[Method]) -> None:
    """The class attributes the engine reads (`missbench.core.method.declaration_problem`)."""
    problem = declaration_problem(cls)
    if problem is not None:
        raise ContractViolation(problem)


def check_parameters(method: Method, cls: type[Method], task: Task, modalities: tuple[str, ...], params: dict[str, Any]) -> str:
    """Trainable parameters exist, and building on the meta device (`bench.py list`, the run's up-front
    check) gives the same count; returns the count in words."""
    n = count_parameters(method)
    if n == 0:
        raise ContractViolation("no trainable parameters")
    try:
        meta = count_on_meta(cls, task, modalities, **params)
    except Exception as e:
        raise ContractViolation(f"does not build on the meta device: {type(e).__name__}: {e}") from None
    if meta != n:
        raise ContractViolation(f"{n:,} parameters, but {meta:,} when built on the meta device")
    return f"{n:,} trainable"


def check_patterns(method: Method, x: Inputs) -> str:
    """For every availability pattern, the harness-zeroed input gives finite logits of the task's shape."""
    task = method.task
    b = batch_size(x)
    spatial = tuple(x.shape[2:]) if isinstance(x, torch.Tensor) else ()
    want = (b, task.out_channels(method.output), *spatial)
    method.eval()
    subsets = all_subsets(method.modalities)
    with torch.no_grad():
        for s in subsets:
            available = torch.tensor([s.mask] * b)
            logits = method(zero_inputs(x, available), available).logits
            if tuple(logits.shape) != want:
                raise ContractViolation(f"{s.label}: logits of shape {tuple(logits.shape)}; expected {want}")
            if not torch.isfinite(logits).all():
                raise ContractViolation(f"{s.label}: logits are not finite")
    return f"{len(subsets)} patterns, logits {'x'.join(map(str, want))}"


def check_ignores_missing(method: Method, x: Inputs, masks_itself: bool = False, rtol: float = RTOL, atol: float = ATOL) -> None:
    """For every pattern, inputs that differ only, and by a lot, in the missing modalities give the same
    predictions through the harness's inference: its plain passes zero missing inputs, its shared
    encoding uses the features of zeros for them, so a method whose features of one modality read
    another fails here. With ``masks_itself``, also through the method's own forward on raw inputs
    (it never reads a missing modality, whatever the input holds)."""
    method.eval()
    b = batch_size(x)
    with torch.no_grad():
        for s in all_subsets(method.modalities):
            other = _differs_where_missing(x, s.mask)
            for shared in (True, False):
                predict = subset_predictor(method, [s], shared)
                if not torch.allclose(predict(x)[0], predict(other)[0], rtol=rtol, atol=atol):
                    path = "shared encoding" if shared else "one pass per subset"
                    raise ContractViolation(f"{s.label}: the missing modalities' inputs change the prediction ({path})")
            if masks_itself:
                available = torch.tensor([s.mask] * b)
                if not torch.allclose(method(x, available).logits, method(other, available).logits, rtol=rtol, atol=atol):
                    raise ContractViolation(f"{s.label}: forward reads the missing modalities' raw inputs")


def check_shared_encoding(method: Method, x: Inputs, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """Encoding once and decoding per subset gives what one full pass per subset gives, on every subset.
    False when the method has no shared encoding (encode returns None)."""
    method.eval()
    subsets = all_subsets(method.modalities)
    with torch.no_grad():
        if method.encode(x) is None:
            return False
        shared = subset_predictor(method, subsets, shared=True)(x)
        plain = subset_predictor(method, subsets, shared=False)(x)
    for s, a, b in zip(subsets, shared, plain):
        if not torch.allclose(a, b, rtol=rtol, atol=atol):
            raise ContractViolation(f"{s.label}: decode(encode(x)) differs from forward by {(a - b).abs().max().item():.3g}")
    return True


def build(cls: type[Method], task: Task, modalities: tuple[str, ...], params: dict[str, Any], seed: int = 0) -> Method:
    """``cls(task, modalities, **params)`` with torch seeded, as a run builds it."""
    torch.manual_seed(seed)
    return cls(task, modalities, **params)


def check_same_seed(cls: type[Method], task: Task, modalities: tuple[str, ...], params: dict[str, Any], x: Inputs,
                    y: torch.Tensor) -> None:
    """Two builds under the same seed give the same predictions, and the same loss terms in training mode
    under the same seed (dropout and sampling included)."""
    a, b = (build(cls, task, modalities, params) for _ in range(2))
    available = torch.ones(batch_size(x), len(modalities), dtype=torch.bool)
    with torch.no_grad():
        if not torch.equal(a.eval()(x, available).logits, b.eval()(x, available).logits):
            raise ContractViolation("two builds under one seed predict differently")
        outs = []
        for model in (a.train(), b.train()):
            torch.manual_seed(1)
            outs.append(model(x, available, y).losses)
    if outs[0].keys() != outs[1].keys() or any(not torch.equal(outs[0][k], outs[1][k]) for k in outs[0]):
        raise ContractViolation("two builds under one seed give different training losses under one seed")


class ToyBatches:
    """One toy batch as the stage data of `missbench.core.tasks.base.Batches` (what `fit_stage` reads)."""

    def __init__(self, x: Inputs, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def stage(self, every: torch.Tensor) -> Iterator[tuple[Inputs, torch.Tensor, torch.Tensor]]:
        yield self.x, self.y, every.expand(batch_size(self.x), -1)


def toy_training(method: Method, x: Inputs, y: torch.Tensor, availability: Callable[[int], torch.Tensor], steps: int,
                 stages: bool = True, lr: float = TOY_LR) -> list[dict[str, float]]:
    """Train on one toy batch for ``steps`` steps of the engine's `train_step` (Adam at ``lr``), the
    availability of each step from ``availability`` applied by zeroing; with ``stages``, the method's
    stages are fit when their step comes, as the trainer does. Returns each step's loss terms and
    total; raises `ContractViolation` when a step has no loss terms or a term that is not a finite scalar."""
    method.train()
    optimizer = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=lr)
    stage_steps = method.stage_steps(steps) if stages else []
    exe, timer, history = Execution(channels_last=False, progress=False), PhaseTimer(), []
    every = torch.ones(1, len(method.modalities), dtype=torch.bool)
    for step in range(steps):
        for index, at in enumerate(stage_steps):
            if at == step:
                fit_stage(method, index, ToyBatches(x, y), every, exe)
        available = availability(step)
        method.set_step(step, steps)
        try:
            out, total = train_step(method, optimizer, zero_inputs(x, available), y, available, exe, timer)
        except (MethodError, FloatingPointError) as e:
            raise ContractViolation(f"step {step}: {e}") from None
        history.append({k: v.item() for k, v in out.losses.items()} | {"total": total.item()})
    return history


def check_losses(method: Method, x: Inputs, y: torch.Tensor, steps: int = LOSS_STEPS) -> str:
    """Named, finite loss terms at every step of a short toy training with a random availability per step,
    and a total that falls under the method's final objective: over the steps after its last stage (a
    stage may change the loss terms, as SMIL's meta-learning does), the mean of the last quarter is below
    that of the first."""
    history = toy_training(method, x, y, random_availability(batch_size(x), len(method.modalities)), steps)
    final = history[max(method.stage_steps(steps), default=0):]
    quarter = max(1, len(final) // 4)
    first = sum(h["total"] for h in final[:quarter]) / quarter
    last = sum(h["total"] for h in final[-quarter:]) / quarter
    terms = ", ".join(k for k in final[0] if k != "total")
    after = f" after the stage at step {steps - len(final)}" if len(final) < steps else ""
    if not last < first:
        raise ContractViolation(f"the total loss does not fall in {len(final)} toy steps{after} "
                                f"({first:.4g} -> {last:.4g}; terms {terms})")
    return f"{terms}: {first:.3g} -> {last:.3g}{after}"


def check_checkpoint(method: Method, cls: type[Method], params: dict[str, Any], x: Inputs) -> None:
    """A state_dict saved with torch.save and loaded into a fresh build (another seed) predicts the same,
    on every pattern."""
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    fresh = build(cls, method.task, method.modalities, params, seed=1)
    fresh.load_state_dict(torch.load(buffer, weights_only=False))
    method.eval()
    fresh.eval()
    with torch.no_grad():
        for s in all_subsets(method.modalities):
            available = torch.tensor([s.mask] * batch_size(x))
            zeroed = zero_inputs(x, available)
            if not torch.equal(method(zeroed, available).logits, fresh(zeroed, available).logits):
                raise ContractViolation(f"{s.label}: the reloaded state_dict predicts differently")


# --- all of them ---------------------------------------------------------------------------------------------

def check_task(cls: type[Method], task_name: str, params: dict[str, Any]) -> list[Finding]:
    """Every check of ``cls`` on the toy ``task_name``; a check that raises anything fails with the error."""
    task, modalities = toy_task(task_name)
    x, y = toy_batch(task)
    findings: list[Finding] = []
    method: Method | None = None

    def run(check: str, body: Callable[[], Any]) -> None:
        try:
            result = body()
        except Exception as e:  # noqa: BLE001 - any error is a failed check, reported with its message
            message = str(e) if isinstance(e, ContractViolation) else f"{type(e).__name__}: {e}"
            findings.append(Finding(task_name, check, False, " ".join(message.split())))
            return
        findings.append(Finding(task_name, check, None if result is False else True, "" if result in (None, True, False) else result))

    def built() -> str:
        nonlocal method
        method = build(cls, task, modalities, params)
        return check_parameters(method, cls, task, modalities, params)

    run("parameters", built)
    if method is None:
        return findings
    run("patterns", lambda: check_patterns(method, x))
    run("ignores missing", lambda: check_ignores_missing(method, x, rtol=1e-4))
    run("shared encoding", lambda: check_shared_encoding(method, x, rtol=1e-4))
    run("same seed", lambda: check_same_seed(cls, task, modalities, params, x, y))
    run("losses", lambda: check_losses(method, x, y))
    run("checkpoint", lambda: check_checkpoint(method, cls, params, x))
    return findings


def check_method(cls: type[Method], params: dict[str, Any] | None = None) -> list[Finding]:
    """The declaration, then every check on each task ``cls`` declares (``params``: its parameters, e.g.
    small widths)."""
    params = params or {}
    try:
        check_declaration(cls)
    except ContractViolation as e:
        return [Finding("-", "declaration", False, str(e))]
    findings = [Finding("-", "declaration", True, f"tasks {', '.join(cls.tasks)}")]
    for task_name in cls.tasks:
        findings += check_task(cls, task_name, params)
    return findings
