"""The `Method` contract every file in ``methods/`` implements: every hook the engine may call, with its default.

The harness zeroes missing modalities in ``x`` before any call and passes ``available`` (B x M
booleans, per sample). On segmentation ``x`` is one B x M x D x H x W tensor; on classification a
list of per-modality batches (modalities differ in shape; `Task.inputs` describes them).

A method that encodes each modality on its own implements `Method.encode` (per-modality features, no
availability needed) and `Method.decode` (fusion and decoding for one availability pattern);
evaluation then encodes each window once and decodes it for every subset. Others override
`Method.forward` and leave `encode` returning None. A method adds its own task loss (`task_loss`)
to the named loss terms it returns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from missbench.core.params import Rule, check_params
from missbench.core.tasks.base import Task
from missbench.core.training import TrainingDefaults

#: (harness-zeroed x, available, target) batches, as `Method.fit_stage` receives them.
StageBatches = Callable[[], Iterator[tuple[Any, torch.Tensor, torch.Tensor]]]


@dataclass
class Output:
    """What a forward pass returns: ``logits`` (B x C x ...) and named, already weighted loss terms."""

    logits: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)


class Method(nn.Module):
    """Base class of the methods; subclasses set the class attributes below and implement the forward pass."""

    #: The name a protocol or ``--methods`` uses.
    name: ClassVar[str]
    #: Paper and official code, shown by ``bench.py list`` and recorded in meta.json.
    citation: ClassVar[str] = ""
    #: Per task it supports, its output convention: "regions" (sigmoid ET/TC/WT, segmentation) or "labels"
    #: (softmax over the task's classes or labels).
    outputs: ClassVar[dict[str, str]] = {"segmentation": "regions"}
    #: The tasks it supports: the keys of ``outputs`` (set for every subclass; not declared).
    tasks: ClassVar[tuple[str, ...]] = ("segmentation",)
    #: Hyperparameters with their paper defaults; a default's type is the parameter's type.
    defaults: ClassVar[dict[str, Any]] = {}
    #: Allowed values of parameters where the type is not enough (missbench.core.params).
    constraints: ClassVar[dict[str, Rule]] = {}
    #: The paper's training settings per task; a task not listed trains with `TrainingDefaults()`.
    training_defaults: ClassVar[dict[str, TrainingDefaults]] = {}
    #: True when the method returns its task's loss terms itself (deep supervision, a stage-dependent objective);
    #: otherwise the engine adds `task_loss` of the logits to the terms a training forward returns.
    own_task_loss: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Derive ``tasks`` from ``outputs``, and refuse, when the class is defined, a method (a class with a ``name`` of
        its own; a helper base has none) whose declaration the engine cannot read, naming what is missing."""
        super().__init_subclass__(**kwargs)
        if "tasks" in vars(cls):
            raise TypeError(f"method class {cls.__name__}: declare `outputs` (a convention per task); `tasks` follows from it")
        cls.tasks = tuple(cls.outputs) if isinstance(cls.outputs, dict) else ()
        if "name" in vars(cls):
            problem = declaration_problem(cls)
            if problem is not None:
                raise TypeError(f"method class {cls.__name__}: {problem}")
    #: Repository, commit and file of the official model class whose checkpoints `official_state_dict` reads ("" = none).
    official_code: ClassVar[str] = ""

    def __init__(self, task: Task, modalities: tuple[str, ...], **params: Any) -> None:
        super().__init__()
        if task.name not in self.tasks:
            raise ValueError(f"method {self.name!r} does not support task {task.name!r} (supports {list(self.tasks)})")
        check_params(f"method {self.name!r}", params, self.defaults, self.constraints)
        self.task = task
        self.modalities = tuple(modalities)
        self.params: dict[str, Any] = {**self.defaults, **params}
        self.step, self.total_steps = 0, 1

    @property
    def n_modalities(self) -> int:
        return len(self.modalities)

    @property
    def output(self) -> str:
        """This instance's output convention, for its task."""
        return self.outputs[self.task.name]

    @classmethod
    def training_for(cls, task_name: str) -> TrainingDefaults:
        """The training defaults on ``task_name``."""
        return cls.training_defaults.get(task_name, TrainingDefaults())

    # --- hooks the trainer calls ---------------------------------------------------------------

    def set_step(self, step: int, total: int) -> None:
        """Called before each training iteration, for losses switched on after a start (RFNet)."""
        self.step, self.total_steps = step, total

    def stage_steps(self, total: int) -> list[int]:
        """Iterations (of ``total``) at which the trainer calls `fit_stage`, in increasing order (default: none)."""
        return []

    def fit_stage(self, index: int, batches: StageBatches) -> None:
        """Called once when training reaches ``stage_steps()[index]`` (e.g. to fit k-means centroids or freeze encoders).

        ``batches()`` iterates the training data once as (harness-zeroed x, available, target), the
        trainer having put the method in eval mode under no_grad. What this computes must live in
        buffers or parameters, so a checkpoint carries it and a resumed run does not refit.
        """

    # --- the forward pass ----------------------------------------------------------------------

    def encode(self, x: Any) -> list[Any] | None:
        """Per-modality features of ``x`` (one entry per modality), or None if the method cannot share them."""
        return None

    def decode(self, features: list[Any], available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        """Fuse per-modality ``features`` under ``available`` and decode; loss terms when ``target`` is given."""
        raise NotImplementedError(f"{type(self).__name__} implements encode but not decode")

    def forward(self, x: Any, available: torch.Tensor, target: torch.Tensor | None = None) -> Output:
        """Logits for ``x`` under ``available``; with ``target``, the named loss terms too (default: encode, decode)."""
        features = self.encode(x)
        if features is None:
            raise NotImplementedError(f"{type(self).__name__} must implement encode/decode or forward")
        return self.decode(features, available, target)

    def task_loss(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The task's loss for this method's output convention, as named terms."""
        return self.task.loss(logits, target, self.output)

    def training_output(self, x: Any, available: torch.Tensor, target: torch.Tensor) -> Output:
        """A training forward: the method's output, the task loss of its logits first among its loss terms (unless
        `own_task_loss`). What the trainer, the timing protocol and `bench.py check` call."""
        out = self(x, available, target)
        if not self.own_task_loss:
            out.losses = {**self.task_loss(out.logits, target), **out.losses}
        return out

    # --- official checkpoints ------------------------------------------------------------------

    def official_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A state dict saved by the official code (`official_code`; ``module.`` prefixes allowed) as this module's:
        after ``self.load_state_dict(result, strict=True)`` it computes the official model's function on inputs
        in the data set's modality order (default: no loader)."""
        raise NotImplementedError(f"method {self.name!r} has no loader for official checkpoints")

    # --- analysis ------------------------------------------------------------------------------

    def feature_views(self, x: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """Named B x M x C pooled features of a full-modality segmentation patch for the feature figure
        (features.npz; ShaSpec's shared and specific features), or None (default: nothing to save)."""
        return None


def modality_slots(method: str, modalities: tuple[str, ...], names: tuple[str, ...]) -> list[int]:
    """Indices into ``modalities`` of ``names`` (an official code's input order, named as the data set names
    them; case-insensitive), or a ValueError unless the two hold the same modalities."""
    index = {m.lower(): i for i, m in enumerate(modalities)}
    if sorted(index) != sorted(n.lower() for n in names):
        raise ValueError(f"{method}: the official code's modalities are {list(names)}, not {list(modalities)}")
    return [index[n.lower()] for n in names]


def permute_blocks(t: torch.Tensor, dim: int, order: list[int]) -> torch.Tensor:
    """``t`` with dimension ``dim`` cut into ``len(order)`` equal blocks (one per modality), block i of the result
    being block ``order[i]`` of ``t``: reorders the weights that read or write modality-major concatenations."""
    index = torch.tensor(order, device=t.device)
    return t.unflatten(dim, (len(order), -1)).index_select(dim, index).flatten(dim, dim + 1)


#: The output conventions each task allows.
OUTPUTS = {"segmentation": ("regions", "labels"), "classification": ("labels",)}


def declaration_problem(cls: type) -> str | None:
    """What is wrong with a method class's declaration, in one line (None: nothing): a name, an output convention per
    task it supports, parameter rules that belong to declared parameters and allow their defaults, and a forward
    pass (`forward`, or `encode` with `decode`)."""
    from missbench.core.params import ParamError, check_value

    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        return "no `name` (the name --methods uses)"
    if not isinstance(cls.outputs, dict) or not cls.outputs or any(t not in OUTPUTS for t in cls.outputs):
        return f"outputs {cls.outputs!r}: expected a mapping of each task it supports ({list(OUTPUTS)}) to its output convention"
    for t, output in cls.outputs.items():
        if output not in OUTPUTS[t]:
            return f"outputs[{t!r}] is {output!r}; expected one of {list(OUTPUTS[t])}"
    if not isinstance(cls.defaults, dict) or not isinstance(cls.constraints, dict):
        return "defaults and constraints must be mappings of parameter name to value and to rule"
    stray = sorted(set(cls.constraints) - set(cls.defaults))
    if stray:
        return f"constraints name undeclared parameters {stray}"
    for key, rule in cls.constraints.items():
        try:
            check_value(key, cls.defaults[key], cls.defaults[key], rule)
        except ParamError as e:
            return f"the default breaks its own rule: {e}"
    if cls.forward is Method.forward and cls.encode is Method.encode:
        return "no forward pass: implement forward(x, available, target), or encode(x) and decode(features, available, target)"
    if cls.encode is not Method.encode and cls.decode is Method.decode and cls.forward is Method.forward:
        return "implements encode but not decode"
    return None


def unregistered(module: nn.Module) -> str | None:
    """A module or parameter that ``module`` holds outside torch's registries (in a plain list, tuple or dict
    attribute), which the optimiser, ``.to(device)`` and checkpoints would all miss; None when there is none."""
    for owner_name, owner in module.named_modules():
        for attr, value in vars(owner).items():
            items = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else ()
            if attr.startswith("_") or not items:
                continue
            if any(isinstance(v, nn.Module | nn.Parameter) for v in items):
                where = f"{owner_name}.{attr}" if owner_name else attr
                return (f"holds modules or parameters in the plain {type(value).__name__} attribute {where!r}, which the "
                        f"optimiser and checkpoints miss; use nn.ModuleList, nn.ModuleDict or nn.ParameterList")
    return None


def meta_output_problem(method: Method, patch: tuple[int, int, int] | None) -> str | None:
    """The logits' shape of one forward pass (in eval mode) on the meta device (no memory, no compute) against the
    task's, in one line; None when it is right, or when the method's forward cannot run on the meta device (a
    data-dependent step such as ``.item()``: the trainer checks the channels at the first step instead). For a
    throw-away build: ``method`` is left in eval mode."""
    task = method.task
    with torch.device("meta"):
        if task.volumetric:
            x: Any = torch.zeros(1, method.n_modalities, *(patch or (16, 16, 16)))
        else:
            x = [torch.zeros(2, *task.inputs[m].shape) for m in method.modalities]
        available = torch.ones(1 if task.volumetric else 2, method.n_modalities, dtype=torch.bool)
        try:
            with torch.no_grad():
                logits = method.eval()(x, available).logits
        except Exception:  # noqa: BLE001 - not checkable on the meta device; the first training step is
            return None
    channels = task.out_channels(method.output)
    if logits.ndim < 2 or logits.shape[1] != channels:
        return (f"its logits have shape {tuple(logits.shape)}; the {task.name} task's {method.output!r} output needs "
                f"{channels} channels in dimension 1")
    return None


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@contextlib.contextmanager
def _no_initialisation() -> Iterator[None]:
    """Makes torch.nn.init's functions no-ops: on the meta device there is nothing to fill, and running them
    costs most of a meta build (normal_ even imports torch._dynamo, about a second, on first use)."""
    names = [n for n in vars(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(nn.init, n) for n in names}
    for n in names:
        setattr(nn.init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for n, function in saved.items():
            setattr(nn.init, n, function)


def build_on_meta(cls: type[Method], task: Task, modalities: tuple[str, ...], **params: Any) -> Method:
    """``cls(task, modalities, **params)`` built on the meta device: shapes only, no memory and no
    initialisation, so building a 188M-parameter backbone (to count it, or to see its arguments refused)
    takes milliseconds."""
    with torch.device("meta"), _no_initialisation():
        return cls(task, modalities, **params)


def count_on_meta(cls: type[Method], task: Task, modalities: tuple[str, ...], **params: Any) -> int:
    """`count_parameters` of the method `build_on_meta` builds."""
    return count_parameters(build_on_meta(cls, task, modalities, **params))
