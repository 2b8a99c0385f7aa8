"""Run specs: one frozen (method, data set, protocol, train subset, seed, budget), hashed to a run id."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from missbench.core.params import Between, Rule, Shape

if TYPE_CHECKING:  # numpy comes with the metrics: imported on use, so `bench.py --help` does not pay for it
    from missbench.core.metrics import MetricPolicy


def canonical(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, so equal specs hash equal."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Budget:
    """Training and evaluation budget: iterations, patch, batch, checkpoint period, window overlap.

    ``patch`` is None on classification. ``val_every``: on classification, iterations between
    evaluations on the validation split for model selection (0: ten evaluations per run).
    """

    iterations: int
    patch: tuple[int, int, int] | None
    batch: int
    checkpoint_every: int
    overlap: float = 0.5
    log_every: int = 10
    val_every: int = 0

    @property
    def validation_period(self) -> int:
        return self.val_every or max(1, self.iterations // 10)


#: Each budget value's type (by example; patch: an integer or a list, None on classification) and allowed
#: values, checked when a protocol file loads.
BUDGET_TYPES: dict[str, Any] = {"iterations": 1, "patch": None, "batch": 1, "checkpoint_every": 1, "overlap": 0.5,
                                "log_every": 1, "val_every": 0}
BUDGET_RULES: dict[str, Rule] = {
    **{key: Between(1, integer=True) for key in ("iterations", "batch", "checkpoint_every", "log_every")},
    "patch": Shape(3, 1), "overlap": Between(0, 1, high_open=True), "val_every": Between(0, integer=True),
}


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
    #: The protocol's fixed per-sample availability (missbench/missing.py), e.g. {scheme: slots, eval: masks},
    #: and the grid point ``missing_rate``; empty and None when modalities are dropped at random.
    missing: dict[str, Any] = field(default_factory=dict)
    missing_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["budget"]["patch"] = list(self.budget.patch) if self.budget.patch is not None else None
        d["eval_subsets"] = list(self.eval_subsets)
        # Settings added later are left out at their defaults, so earlier run ids stay valid.
        if not self.budget.val_every:
            del d["budget"]["val_every"]
        if not self.missing and self.missing_rate is None:
            del d["missing"], d["missing_rate"]
        if d["metric"].get("hd95") == "pooled":
            del d["metric"]["hd95"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        d = dict(d)
        b = dict(d.pop("budget"))
        b["patch"] = tuple(b["patch"]) if b["patch"] is not None else None
        d["eval_subsets"] = tuple(d["eval_subsets"])
        return cls(budget=Budget(**b), **d)

    @property
    def run_id(self) -> str:
        """Readable prefix plus a hash of the canonical serialisation."""
        digest = hashlib.sha256(canonical(self.to_dict()).encode()).hexdigest()[:10]
        train = (self.train_subset or "random").replace("+", "-")
        rate = f"_r{self.missing_rate:g}" if self.missing_rate is not None else ""
        return f"{self.method}_{train}{rate}_seed{self.seed}_{digest}"

    @property
    def variant(self) -> str:
        """The method with its overridden parameters, e.g. ``shaspec[alpha=0,beta=0.02]``: a table column."""
        if not self.method_params:
            return self.method
        return f"{self.method}[{','.join(f'{k}={v}' for k, v in sorted(self.method_params.items()))}]"

    @property
    def derived_seed(self) -> int:
        """The run's RNG seed from (global seed, method, data set, protocol, train subset)."""
        key = [self.seed, self.method, self.dataset, self.protocol, self.train_subset]
        if self.missing_rate is not None:
            key.append(self.missing_rate)
        return int(hashlib.sha256(canonical(key).encode()).hexdigest()[:8], 16)

    def metric_policy(self) -> MetricPolicy:
        """The scoring rules of the spec's ``metric`` block (the rest of it is the window weighting)."""
        from missbench.core.metrics import POLICY_DEFAULTS, MetricPolicy

        return MetricPolicy(**{k: v for k, v in self.metric.items() if k in POLICY_DEFAULTS})

    @property
    def mask_seed(self) -> int:
        """Seed of the protocol's per-sample availability masks: the method is not in it, so every
        method of a comparison sees the same masks."""
        key = canonical([self.seed, self.dataset, self.dataset_params, self.protocol, self.missing, self.missing_rate])
        return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
