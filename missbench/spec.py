"""Run specs: one frozen (method, data set, protocol, train subset, seed, budget), hashed to a run id."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


def canonical(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, so equal specs hash equal."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Budget:
    """Training and evaluation budget: iterations, patch, batch, checkpoint period, window overlap."""

    iterations: int
    patch: tuple[int, int, int]
    batch: int
    checkpoint_every: int
    overlap: float = 0.5
    log_every: int = 10


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run's numbers. ``train_subset`` None means the random scheme."""

    protocol: str
    mode: str
    method: str
    method_params: dict[str, Any]
    dataset: str
    dataset_params: dict[str, Any]
    train_subset: str | None
    eval_subsets: tuple[str, ...]
    seed: int
    budget: Budget
    budget_name: str
    training: dict[str, Any] = field(default_factory=dict)
    metric: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["budget"]["patch"] = list(self.budget.patch)
        d["eval_subsets"] = list(self.eval_subsets)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        d = dict(d)
        b = dict(d.pop("budget"))
        b["patch"] = tuple(b["patch"])
        d["eval_subsets"] = tuple(d["eval_subsets"])
        return cls(budget=Budget(**b), **d)

    @property
    def run_id(self) -> str:
        """Readable prefix plus a hash of the canonical serialisation."""
        digest = hashlib.sha256(canonical(self.to_dict()).encode()).hexdigest()[:10]
        train = (self.train_subset or "random").replace("+", "-")
        return f"{self.method}_{train}_seed{self.seed}_{digest}"

    @property
    def variant(self) -> str:
        """The method with its overridden parameters, e.g. ``shaspec[alpha=0,beta=0.02]``: a table column."""
        if not self.method_params:
            return self.method
        return f"{self.method}[{','.join(f'{k}={v}' for k, v in sorted(self.method_params.items()))}]"

    @property
    def derived_seed(self) -> int:
        """The run's RNG seed from (global seed, method, data set, protocol, train subset)."""
        key = canonical([self.seed, self.method, self.dataset, self.protocol, self.train_subset])
        return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)


@dataclass(frozen=True)
class Execution:
    """Where and how a run executes. Recorded in meta.json but not part of the run id: it changes
    speed, not results (channels-last reorders float sums only)."""

    device: str = "cpu"
    channels_last: bool = True
    progress: bool = True
    #: Sliding windows evaluated per forward pass.
    window_batch: int = 8

    @property
    def torch_device(self) -> "torch.device":
        import torch

        return torch.device(self.device)

    def prepare(self, x: "torch.Tensor") -> "torch.Tensor":
        """Move a 5-D input to the device in the chosen memory format."""
        import torch

        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last and x.ndim == 5 else x
