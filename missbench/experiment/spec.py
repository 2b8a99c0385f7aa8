"""The store's identities: a **model** (what training depends on, and the code that trains) and a
**score** (a model plus what evaluation depends on), each hashed by one function here; a `RunSpec`
pairs one model with one score under the labels of the protocol that asked for them.

    ModelSpec.model_id   method + parameters, data set + the parameters that change training, train
                         subset or dropping scheme, training-time missingness, seed, the budget's
                         training part, training overrides, model-selection subsets, and the code:
                         SHA-256 of the method's and the data set's plugin files and TRAINING_VERSION
    ScoreSpec.score_id   the model id + evaluation data set (all its parameters) and split, subsets,
                         evaluation masks, metric policy (empty-region rule, ET post-processing, HD95
                         definition), window overlap and weighting, the evaluation data set's code and
                         SCORING_VERSION

The protocol file's name and the budget's name are in neither (they label tables). Values are
normalised before they get here (`missbench.core.params.normalised`: 1 == 1.0, defaults left out) and
hashed as canonical JSON (sorted keys), so one experiment has one id. Options that change speed, not
numbers (device, threads, checkpoint period, logging), are in no identity.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from missbench.core.params import Between, Rule, Shape

if TYPE_CHECKING:  # numpy comes with the metrics: imported on use, so `bench.py --help` does not pay for it
    from missbench.core.metrics import MetricPolicy

#: The engine's results versions: bump TRAINING_VERSION in a commit that changes what training produces
#: (weights, for the same spec and plugin files), SCORING_VERSION in one that changes the rows scoring
#: produces from the same weights, each with a line in docs/results_versions.md. tests/test_results_version.py
#: pins the smoke numbers of both and fails when they move without a bump.
TRAINING_VERSION = 2
SCORING_VERSION = 1
#: The results version of runs written before models and scores were separate (one spec.json per run).
LEGACY_VERSION = 0


def canonical(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, so equal specs hash equal."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: Any) -> str:
    """The first 10 hex digits of the SHA-256 of ``obj``'s canonical JSON."""
    return hashlib.sha256(canonical(obj).encode()).hexdigest()[:10]


def _seed_of(key: list[Any]) -> int:
    return int(hashlib.sha256(canonical(key).encode()).hexdigest()[:8], 16)


@dataclass(frozen=True)
class Budget:
    """A protocol's named budget: iterations, patch, batch, checkpoint period, window overlap.

    ``patch`` is None on classification. ``val_every``: on classification, iterations between
    evaluations on the validation split for model selection (0: ten evaluations per run).
    Iterations, patch, batch and ``val_every`` are the model's (`training_part`); ``overlap`` the
    score's; the checkpoint and log periods change no number.
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

    def training_part(self) -> dict[str, Any]:
        """What of the budget changes the trained model (``val_every`` only where set)."""
        out = {"iterations": self.iterations, "batch": self.batch, "patch": list(self.patch) if self.patch is not None else None}
        return out | ({"val_every": self.val_every} if self.val_every else {})


#: Each budget value's type (by example; patch: an integer or a list, None on classification) and allowed
#: values, checked when a protocol file loads.
BUDGET_TYPES: dict[str, Any] = {"iterations": 1, "patch": None, "batch": 1, "checkpoint_every": 1, "overlap": 0.5,
                                "log_every": 1, "val_every": 0}
BUDGET_RULES: dict[str, Rule] = {
    **{key: Between(1, integer=True) for key in ("iterations", "batch", "checkpoint_every", "log_every")},
    "patch": Shape(3, 1), "overlap": Between(0, 1, high_open=True), "val_every": Between(0, integer=True),
}


def _compact(d: dict[str, Any], optional: tuple[str, ...]) -> dict[str, Any]:
    """``d`` without the ``optional`` fields that are empty: a feature a spec does not use adds nothing to its hash."""
    return {k: v for k, v in d.items() if k not in optional or v not in ({}, (), [], None, "")}


@dataclass(frozen=True)
class ModelSpec:
    """Everything a trained model depends on (see the module docstring). ``train_subset`` None: the method's
    random dropping scheme. ``code``: {"method", "dataset": SHA-256 of the plugin files, "version"}.
    ``selection``: the validation subsets of a task that keeps the best weights (classification).
    ``timing``: the timing protocol's counts and inference settings (a measurement, not a reusable model).
    ``released``: a released checkpoint ({"sha256", "file", "source", "trained_on"}): its identity is the
    method, its parameters and the file's SHA-256; it has no training of its own."""

    method: str
    method_params: dict[str, Any]
    dataset: str
    dataset_params: dict[str, Any]
    train_subset: str | None
    seed: int
    budget: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, Any] = field(default_factory=dict)
    missing_rate: float | None = None
    selection: tuple[str, ...] = ()
    timing: dict[str, Any] = field(default_factory=dict)
    code: dict[str, Any] = field(default_factory=dict)
    released: dict[str, Any] = field(default_factory=dict)
    #: The id the store knows a model by whose id an earlier engine computed (a legacy run folder's name).
    stored_id: str = ""
    #: torch's CPU threads, for a model trained on the CPU: its float sums follow the thread count (``--threads``
    #: moved 12 of ShaSpec's 240 smoke values by up to 0.0016), so a count is part of what was trained; None on a GPU.
    cpu_threads: int | None = None

    OPTIONAL = ("training", "missing", "missing_rate", "selection", "timing", "released", "stored_id", "cpu_threads")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["selection"] = list(self.selection)
        return _compact(d, self.OPTIONAL)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        d = dict(d)
        d["selection"] = tuple(d.get("selection", ()))
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})

    @property
    def model_id(self) -> str:
        """``<method>_<train subset>[_r<rate>]_seed<seed>_<hash>``, or ``<method>_released_<hash>``."""
        if self.stored_id:
            return self.stored_id
        if self.released:
            return f"{self.method}_released_{digest(self.to_dict())}"
        train = (self.train_subset or "random").replace("+", "-")
        rate = f"_r{self.missing_rate:g}" if self.missing_rate is not None else ""
        return f"{self.method}_{train}{rate}_seed{self.seed}_{digest(self.to_dict())}"

    @property
    def variant(self) -> str:
        """The method with its overridden parameters, e.g. ``shaspec[alpha=0.0,beta=0.02]``: a table column."""
        if not self.method_params:
            return self.method
        return f"{self.method}[{','.join(f'{k}={v}' for k, v in sorted(self.method_params.items()))}]"

    @property
    def derived_seed(self) -> int:
        """The model's RNG seed, from (seed, method, data set, train subset, missing rate): the method's parameters
        are not in it, so the points of a parameter grid share their random numbers (batches, dropping)."""
        key: list[Any] = [self.seed, self.method, self.dataset, self.train_subset]
        if self.missing_rate is not None:
            key.append(self.missing_rate)
        return _seed_of(key)

    @property
    def mask_seed(self) -> int:
        """Seed of a missing-rate protocol's per-sample availability masks: no method in it, so every method
        of a comparison sees the same masks."""
        return _seed_of([self.seed, self.dataset, self.dataset_params, self.missing, self.missing_rate])

    @property
    def patch(self) -> tuple[int, int, int] | None:
        patch = self.budget.get("patch")
        return tuple(patch) if patch is not None else None


@dataclass(frozen=True)
class ScoreSpec:
    """Everything a score depends on besides its model (see the module docstring). ``metric``: the metric
    policy's settings that differ from the evaluation data set's defaults; ``window``: {"overlap",
    "weighting"} on volumes; ``missing``: {"eval": "masks"} when samples are scored under their own drawn
    availability; ``code``: {"dataset": SHA-256 of the evaluation data set's plugin file, "version"}."""

    model_id: str
    dataset: str
    dataset_params: dict[str, Any]
    subsets: tuple[str, ...]
    split: str = "test"
    metric: dict[str, Any] = field(default_factory=dict)
    window: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, Any] = field(default_factory=dict)
    code: dict[str, Any] = field(default_factory=dict)
    #: torch's CPU threads, for a score computed on the CPU (see ModelSpec.cpu_threads); None on a GPU.
    cpu_threads: int | None = None

    OPTIONAL = ("metric", "window", "missing", "cpu_threads")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["subsets"] = list(self.subsets)
        return _compact(d, self.OPTIONAL)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreSpec:
        d = dict(d)
        d["subsets"] = tuple(d["subsets"])
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})

    @property
    def score_id(self) -> str:
        """``<data set>_<split>_<hash>`` (the model id is in the hash)."""
        return f"{self.dataset}_{self.split}_{digest(self.to_dict())}"

    def policy(self, et_threshold: int) -> MetricPolicy:
        """The metric policy: the spec's settings over the defaults, with the evaluation data set's ET threshold."""
        from missbench.core.metrics import MetricPolicy

        return MetricPolicy(**{"et_threshold": et_threshold, **self.metric})


@dataclass(frozen=True)
class RunSpec:
    """One request of a protocol: a model, one of its scores, the protocol's named budget (its checkpoint
    and log periods too), the labels tables group by (protocol, mode, budget name), and the data sets'
    parameters as given (``train_data``, ``eval_data``: with the location parameters the identities leave
    out), to build them."""

    model: ModelSpec
    score: ScoreSpec
    budget: Budget
    protocol: str
    mode: str
    budget_name: str
    train_data: dict[str, Any] = field(default_factory=dict)
    eval_data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.model.released and self.model.budget != self.budget.training_part():
            raise ValueError(f"request of model {self.model.model_id}: its budget {self.model.budget} is not the training part "
                             f"of {self.budget}")

    @property
    def run_id(self) -> str:
        """``<model id>/<score id>``: where the score lies in a sweep folder."""
        return f"{self.model.model_id}/{self.score.score_id}"

    def labels(self) -> dict[str, str]:
        return {"protocol": self.protocol, "mode": self.mode, "budget_name": self.budget_name}

    def with_budget(self, **changes: Any) -> RunSpec:
        """The same request under another budget (``changes`` to it): its model's training part and its score's window
        overlap follow."""
        budget = replace(self.budget, **changes)
        window = {**self.score.window, "overlap": budget.overlap} if self.score.window else {}
        return self._of(replace(self.model, budget=budget.training_part()), budget, window=window)

    def on_cpu_threads(self, threads: int | None, train: bool = True) -> RunSpec:
        """The same request scored, and with ``train`` trained, with ``threads`` CPU threads (None: on a GPU); a
        released or legacy model keeps its spec."""
        model = replace(self.model, cpu_threads=threads) if train and not (self.model.released or self.model.stored_id) \
            else self.model
        return self._of(model, self.budget, cpu_threads=threads)

    def with_model(self, **changes: Any) -> RunSpec:
        """The same request of another model (``changes`` to its spec), its score re-pointed at that model."""
        return self._of(replace(self.model, **changes), self.budget)

    def _of(self, model: ModelSpec, budget: Budget, **score: Any) -> RunSpec:
        return RunSpec(model, replace(self.score, model_id=model.model_id, **score), budget, self.protocol, self.mode,
                       self.budget_name, self.train_data, self.eval_data)


def report_spec(model: dict[str, Any], score: dict[str, Any], labels: dict[str, Any]) -> dict[str, Any]:
    """What the report compares, as one mapping: the labels, the model's fields and the score's under ``eval``
    (its subsets as ``eval_subsets``, a row field; a volume's metric policy complete, defaults filled in). Two
    scores pool into one table cell when these agree except for the seed (missbench.report.model)."""
    from missbench.core.metrics import POLICY_DEFAULTS

    evaluation = {k: v for k, v in score.items() if k not in ("model_id", "subsets")}
    if score.get("window"):
        evaluation["metric"] = {**POLICY_DEFAULTS, **score.get("metric", {})}
    return {**labels, **{k: v for k, v in model.items()}, "eval": evaluation, "eval_subsets": list(score.get("subsets", []))}


@dataclass(frozen=True)
class Job:
    """The unit an executor runs: one model (trained unless finished) and the scores asked of it."""

    runs: tuple[RunSpec, ...]

    @property
    def model(self) -> ModelSpec:
        return self.runs[0].model

    @property
    def model_id(self) -> str:
        return self.runs[0].model.model_id

    @property
    def first(self) -> RunSpec:
        """The request that trains the model (its budget's checkpoint and log periods, its labels)."""
        return self.runs[0]


def jobs(specs: list[RunSpec]) -> list[Job]:
    """``specs`` grouped by model, in first-seen order; a score asked twice is kept once."""
    grouped: dict[str, dict[str, RunSpec]] = {}
    for s in specs:
        grouped.setdefault(s.model.model_id, {}).setdefault(s.score.score_id, s)
    return [Job(tuple(runs.values())) for runs in grouped.values()]
