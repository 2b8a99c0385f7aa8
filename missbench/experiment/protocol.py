"""Protocol files (protocols/*.yaml): parsing, strict validation and expansion into run specs.

A protocol names its mode (non_dedicated: one model per method and seed trained with random
modality dropping, evaluated on every listed subset; dedicated: one model per listed subset,
evaluated on that subset, or on all with ``eval_on: all``), the evaluation subsets in table order,
seeds, named budgets, training overrides applied to every method (so a comparison can hold them
equal), fixed method parameters, parameter grids, the metric policy and SLURM resources
(``slurm:``). ``inherit: <protocol>`` starts from another file (a name is looked up beside the file,
then in protocols/): mappings merge key by key, anything else is replaced.
Unknown keys, wrong types and values out of range are errors naming the file and the key: method
parameters, data set parameters, training settings, budget values and the metric policy are checked
against their declarations (missbench.core.params) when the file loads.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from missbench.experiment import registry
from missbench.experiment.registry import inherited
from missbench.core.dataset import Dataset
from missbench.core.params import Between, OneOf, ParamError, Rule, check_declared, normalised
from missbench.experiment.resources import ResourceError
from missbench.experiment.resources import check as check_resources
from missbench.core.metrics import POLICY_DEFAULTS, POLICY_RULES
from missbench.core.training import TRAINING_DEFAULTS, TRAINING_RULES
from missbench.experiment.spec import BUDGET_RULES, BUDGET_TYPES, SCORING_VERSION, TRAINING_VERSION, Budget, ModelSpec, RunSpec, ScoreSpec
from missbench.core.availability import DIRECTIONS, EVALS, MISSING_SCHEMES, TRAINING_SCHEMES
from missbench.core.subsets import all_subsets, parse_subset
from missbench.core.subset_weights import SubsetWeights, WeightsError, parse_weights

MODES = ("non_dedicated", "dedicated", "timing")
TOP_KEYS = {
    "description": str, "mode": str, "dataset": str, "subsets": list, "seeds": list, "budgets": dict,
    "default_budget": str, "training": dict, "method_params": dict, "metric": dict, "grid": dict,
    "eval_on": str, "inherit": str, "slurm": dict, "missing": dict, "timing": dict, "subset_weights": dict,
}
#: mode timing (missbench/engine/timing.py): warm-up and timed training iterations and inference passes, in the
#: model's identity (the measurement). All four are required.
TIMING_KEYS = ("warmup", "iterations", "inference_warmup", "inference_passes")
EVAL_ON = ("own", "all")
_UNSET = object()
REQUIRED = ("mode", "subsets", "seeds", "budgets", "default_budget")
#: The largest seed (rows store seeds as 64-bit integers; numpy's and torch's generators take 32 bits and more).
MAX_SEED = 2**32 - 1
#: A budget's data set parameters: ``dataset`` for the protocol's own data set, ``datasets: {name: {...}}`` for others.
BUDGET_DATASET_KEYS = ("dataset", "datasets")
#: A missing-rate grid (missbench/core/availability.py): the scheme, its rates (per_modality: one mapping of modality
#: to rate per grid point), the rarely present modality (modality_rate) or the one whose absence depends on the case
#: attribute (mnar, with the attribute and the direction), and how test samples are evaluated (default: subsets,
#: masks for slots).
MISSING_KEYS = {"scheme": str, "rates": list, "modality": str, "eval": str, "attribute": str, "direction": str}
#: The keys each scheme takes besides ``scheme`` and ``rates`` (modality_rate requires ``modality``, mnar ``attribute`` and
#: ``modality``).
SCHEME_KEYS = {"modality_rate": ("modality", "eval"), "slots": ("eval",), "per_modality": ("eval",),
               "mnar": ("attribute", "modality", "direction", "eval")}
#: The data set of a protocol file without a ``dataset:`` key.
DEFAULT_DATASET = "brats_synthetic"
#: Sliding-window weighting at evaluation (recorded in the spec only when set, so older run ids stay).
WINDOWS = ("uniform", "gaussian")
#: The metric block: the metric policy (empty-region rule, ET post-processing threshold, HD95 definition)
#: and the window weighting (the last two recorded in the spec only when set, so older run ids stay).
METRIC_DEFAULTS: dict[str, Any] = {**POLICY_DEFAULTS, "window": WINDOWS[0]}
METRIC_RULES: dict[str, Rule] = {**POLICY_RULES, "window": OneOf(*WINDOWS)}


class ProtocolError(ValueError):
    """A malformed protocol file; the message names the file and the key."""


@dataclass(frozen=True)
class BudgetBlock:
    """One named budget of a protocol file: its values and the data set parameters it sets (``dataset``: the
    protocol's own data set; ``datasets``: others, by name)."""

    values: dict[str, Any]
    dataset: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Protocol:
    """A protocol file, parsed and checked once (`load_protocol`); every reader takes its typed fields."""

    name: str
    path: Path
    mode: str
    dataset: str
    subsets: tuple[str, ...]
    seeds: tuple[int, ...]
    budgets: dict[str, BudgetBlock]
    default_budget: str
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[dict[str, list[Any]]]] = field(default_factory=dict)
    eval_on: str = "own"
    slurm: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, int] = field(default_factory=dict)
    subset_weights: SubsetWeights | None = None

    def budget(self, name: str | None, dataset: type[Dataset] | None = None) -> tuple[str, Budget, dict[str, Any]]:
        """(name, budget, data set overrides) of the named budget, or the file's default, for ``dataset``.

        A budget's ``dataset:`` parameters apply to the protocol's own data set only; ``datasets:
        {<name>: {...}}`` gives them for others. ``patch`` is required on segmentation and ignored on
        classification (None in the budget).
        """
        name = name or self.default_budget
        if name not in self.budgets:
            raise ProtocolError(f"{self.path}: unknown budget {name!r}; valid: {', '.join(self.budgets)}")
        block = self.budgets[name]
        b = dict(block.values)
        if dataset is None and self.dataset in registry.dataset_names():
            dataset = registry.dataset_class(self.dataset)
        ds_name = dataset.name if dataset is not None else self.dataset
        ds = block.datasets.get(ds_name, block.dataset if ds_name == self.dataset else {})
        patch = b.pop("patch", None)
        if dataset is not None and dataset.task != "segmentation":
            patch = None
            b.pop("overlap", None)
        elif patch is None:
            raise ProtocolError(f"{self.path}: budgets.{name}: missing required key 'patch' (data set {ds_name!r} is segmentation)")
        else:
            patch = tuple(patch) if isinstance(patch, list) else (patch,) * 3
        return name, Budget(patch=patch, **b), ds

    def missing_points(self, dataset_cls: type[Dataset]) -> list[tuple[dict[str, Any], float | None]]:
        """(missing settings, rate) per grid point of the ``missing:`` block; [({}, None)] without one. A per_modality
        point has no rate: its vector (``modality_rates``, in the data set's modality order) is in the settings."""
        block = self.missing
        if not block:
            return [({}, None)]
        check_missing_for(f"{self.path}: missing", block, dataset_cls)
        settings = {k: v for k, v in block.items() if k != "rates"}
        settings.setdefault("eval", "masks" if block["scheme"] == "slots" else "subsets")
        if block["scheme"] == "mnar":
            settings.setdefault("direction", DIRECTIONS[0])
        if block["scheme"] == "per_modality":
            return [(settings | {"modality_rates": {m: float(v[m]) for m in dataset_cls.modalities}}, None) for v in block["rates"]]
        return [(settings, float(r)) for r in block["rates"]]

    def eval_subsets(self, dataset_cls: type[Dataset]) -> list[str]:
        """The evaluation subsets: the listed ones, checked against the data set's modalities. For a data
        set other than the protocol's own whose modalities the list does not name, all its subsets."""
        mods = dataset_cls.modalities
        subsets = []
        for i, text in enumerate(self.subsets):
            try:
                subsets.append(parse_subset(text, mods).label)
            except ValueError as e:
                if dataset_cls.name != self.dataset:
                    return [s.label for s in all_subsets(mods)]
                raise ProtocolError(f"{self.path}: subsets[{i}]: {e} (data set {dataset_cls.name!r})") from None
        if len(set(subsets)) != len(subsets):
            raise ProtocolError(f"{self.path}: subsets: a subset is listed twice")
        return subsets

    def metric_policy(self, dataset_cls: type[Dataset]) -> dict[str, Any]:
        """The file's metric policy settings (window weighting and timing counts apart) over the data set's defaults."""
        return {"et_threshold": dataset_cls.et_threshold} | {k: v for k, v in self.metric.items() if k in POLICY_DEFAULTS}

    def expand(
        self,
        methods: list[str],
        dataset_cls: type[Dataset],
        dataset_params: dict[str, Any],
        budget: str | None = None,
        seeds: list[int] | None = None,
        method_params: dict[str, dict[str, Any]] | None = None,
        training: dict[str, Any] | None = None,
    ) -> list[RunSpec]:
        """The requests of this protocol for ``methods`` on ``dataset_cls``, in a fixed order, each once."""
        subsets = self.eval_subsets(dataset_cls)
        budget_name, b, ds_overrides = self.budget(budget, dataset_cls)
        data = {**ds_overrides, **dataset_params}
        own = self.eval_on == "own"
        specs = []
        for method in methods:
            for point in self.grid_points(method):
                params = {**self.method_params.get(method, {}), **point, **(method_params or {}).get(method, {})}
                for seed in seeds if seeds is not None else self.seeds:
                    trains: list[str | None] = list(subsets) if self.mode == "dedicated" else [None]
                    for train, (missing, rate) in itertools.product(trains, self.missing_points(dataset_cls)):
                        model = model_spec(method, params, dataset_cls, data, train, int(seed), b,
                                           {**self.training, **(training or {})}, missing, rate,
                                           tuple(subsets), self.timing_block(b))
                        score = score_spec(model, dataset_cls, data, (train,) if train is not None and own else tuple(subsets),
                                           self.metric_policy(dataset_cls), self.metric.get("window", WINDOWS[0]), b.overlap,
                                           missing)
                        specs.append(RunSpec(model, score, b, self.name, self.mode, budget_name, data, data))
        return list({s.run_id: s for s in specs}.values())

    def timing_block(self, budget: Budget) -> dict[str, Any]:
        """A timing protocol's counts and inference window settings (the measurement), else {}."""
        if self.mode != "timing":
            return {}
        return {**self.timing, "overlap": budget.overlap, "window": self.metric.get("window", WINDOWS[0])}

    def grid_points(self, method: str) -> list[dict[str, Any]]:
        """The parameter settings of ``method``'s grid: the union of each block's Cartesian product."""
        blocks = self.grid.get(method)
        if blocks is None:
            return [{}]
        points = []
        for block in blocks:
            keys = list(block)
            points += [dict(zip(keys, values)) for values in itertools.product(*(block[k] for k in keys))]
        return points


def code_of(cls: type) -> str:
    """SHA-256 of the plugin file ``cls`` was imported from ("" for a class defined elsewhere, e.g. in a test)."""
    found = registry.imported_file(cls)
    return found[1] if found is not None else ""


def identity_params(dataset_cls: type[Dataset], params: dict[str, Any], training: bool) -> dict[str, Any]:
    """A data set's parameters as an identity holds them: normalised, without location parameters, and for a
    model without those that change only the evaluation splits."""
    left_out = set(dataset_cls.location_params) | (set(dataset_cls.evaluation_params) if training else set())
    return normalised({k: v for k, v in params.items() if k not in left_out}, dataset_cls.defaults)


def model_spec(method: str, params: dict[str, Any], dataset_cls: type[Dataset], dataset_params: dict[str, Any],
               train_subset: str | None, seed: int, budget: Budget, training: dict[str, Any], missing: dict[str, Any],
               rate: float | None, subsets: tuple[str, ...], timing: dict[str, Any]) -> ModelSpec:
    """The model of one request, its values normalised: method parameters and training overrides in their declared
    types, those equal to the method's defaults left out; the plugin files' hashes as its code."""
    from missbench.core.tasks import get_task_class

    cls = registry.method_class(method)
    if not get_task_class(dataset_cls.task).volumetric:  # whole samples: no patch pipeline, so none in the identity
        training = {k: v for k, v in training.items() if k != "sampler"}
    return ModelSpec(
        method=method, method_params=normalised(params, cls.defaults),
        dataset=dataset_cls.name, dataset_params=identity_params(dataset_cls, dataset_params, training=True),
        train_subset=train_subset, seed=seed, budget=budget.training_part(),
        training=normalised(training, asdict(cls.training_for(dataset_cls.task))),
        missing=missing, missing_rate=rate, selection=subsets if get_task_class(dataset_cls.task).selects_on_validation else (),
        timing=timing, code={"method": code_of(cls), "dataset": code_of(dataset_cls), "version": TRAINING_VERSION},
    )


def score_spec(model: ModelSpec, dataset_cls: type[Dataset], dataset_params: dict[str, Any], subsets: tuple[str, ...],
               policy: dict[str, Any], window: str, overlap: float, missing: dict[str, Any]) -> ScoreSpec:
    """A score of ``model`` on ``dataset_cls`` (its test split), values normalised against their defaults."""
    from missbench.core.tasks import get_task_class

    if model.timing:  # a timing run's rows are its measurement: nothing is scored after it
        return ScoreSpec(model.model_id, dataset_cls.name, {}, (), code={"version": SCORING_VERSION})
    volumes = get_task_class(dataset_cls.task).volumetric
    return ScoreSpec(
        model_id=model.model_id, dataset=dataset_cls.name,
        dataset_params=identity_params(dataset_cls, dataset_params, training=False), subsets=tuple(subsets),
        metric=normalised(policy, POLICY_DEFAULTS) if volumes else {},
        window=normalised({"overlap": overlap, "weighting": window}, {}) if volumes else {},
        missing={"eval": missing["eval"]} if missing.get("eval") == "masks" else {},
        code={"dataset": code_of(dataset_cls), "version": SCORING_VERSION},
    )


def _check_types(where: str, data: dict[str, Any], schema: dict[str, Any]) -> None:
    for key, value in data.items():
        if key not in schema:
            raise ProtocolError(f"{where}: unknown key {key!r}; expected one of {sorted(schema)}")
        want = schema[key]
        if want is float:
            want = (int, float)
        if isinstance(want, type | tuple) and (not isinstance(value, want) or isinstance(value, bool) and want is not bool):
            raise ProtocolError(f"{where}: key {key!r} must be {_type_name(schema[key])}, got {type(value).__name__} {value!r}")


def _check_values(where: str, values: dict[str, Any], defaults: dict[str, Any], rules: dict[str, Rule]) -> None:
    """`missbench.core.params.check_declared` for values a file gave (``where``: the file and key), as `ProtocolError`."""
    try:
        check_declared(where, values, defaults, rules)
    except ParamError as e:
        raise ProtocolError(str(e)) from None


def _plugin(kind: str, name: str, where: str) -> type:
    """A registered method or data set class; a name that is not registered is an error naming ``where``."""
    try:
        return registry.method_class(name) if kind == "method" else registry.dataset_class(name)
    except registry.UnknownName as e:
        raise ProtocolError(f"{where}: {e}") from None


def _type_name(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(x.__name__ for x in t)
    return getattr(t, "__name__", str(t))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A protocol file's mapping with its ``inherit`` chain resolved (relative to the file's folder)."""
    if path.resolve() in chain:
        raise ProtocolError(f"{path}: inherit loops back to {path.name}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ProtocolError(f"{path}: not valid YAML: {e}") from None
    except OSError as e:
        raise ProtocolError(f"{path}: cannot read: {e.strerror}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    _check_types(str(path), data, TOP_KEYS)
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    candidates = inherited(path, parent)
    base = next((c for c in candidates if c.exists()), None)
    if base is None:
        raise ProtocolError(f"{path}: inherit {parent!r}: no file {' or '.join(map(str, candidates))}")
    inherited_data = _read(base, (*chain, path.resolve()))
    if "subset_weights" in data:  # taken whole: a file's weights never mix with its parent's
        inherited_data.pop("subset_weights", None)
    return _merge(inherited_data, data)


def _check_budget(path: Path, name: str, budget: Any, own_dataset: str) -> None:
    """One budget: required keys, each value's type and range, and its data set parameters."""
    where = f"{path}: budgets.{name}"
    if not isinstance(budget, dict):
        raise ProtocolError(f"{where} must be a mapping")
    for key in ("iterations", "batch", "checkpoint_every"):
        if key not in budget:
            raise ProtocolError(f"{where}: missing required key {key!r}")
    values = {k: v for k, v in budget.items() if k not in BUDGET_DATASET_KEYS}
    _check_values(where, values, BUDGET_TYPES, BUDGET_RULES)
    _check_types(where, {k: v for k, v in budget.items() if k in BUDGET_DATASET_KEYS}, dict.fromkeys(BUDGET_DATASET_KEYS, dict))
    blocks = {own_dataset: ("dataset", budget.get("dataset", {}))} if own_dataset in registry.dataset_names() else {}
    for ds_name, params in budget.get("datasets", {}).items():
        blocks[ds_name] = (f"datasets.{ds_name}", params)
    for ds_name, (key, params) in blocks.items():
        if not isinstance(params, dict):
            raise ProtocolError(f"{where}.{key} must be a mapping of data set parameters")
        cls = _plugin("dataset", ds_name, f"{where}.{key}")
        _check_values(f"{where}.{key}", params, cls.defaults, cls.constraints)


def _check_method_params(path: Path, data: dict[str, Any]) -> None:
    """``method_params`` and ``grid``: each value against the method's declared parameters."""
    for method, params in data.get("method_params", {}).items():
        where = f"{path}: method_params.{method}"
        if not isinstance(params, dict):
            raise ProtocolError(f"{where} must be a mapping of parameter: value")
        cls = _plugin("method", method, where)
        _check_values(where, params, cls.defaults, cls.constraints)
    for method, blocks in data.get("grid", {}).items():
        for i, block in enumerate(blocks if isinstance(blocks, list) else [blocks]):
            where = f"{path}: grid.{method}[{i}]"
            if not isinstance(block, dict) or not all(isinstance(v, list) and v for v in block.values()):
                raise ProtocolError(f"{where} must map each parameter to a non-empty list of values")
            cls = _plugin("method", method, where)
            for key, values in block.items():
                for value in values:
                    _check_values(where, {key: value}, cls.defaults, cls.constraints)


def _is_rate(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


def _check_missing(path: Path, data: dict[str, Any]) -> None:
    """The ``missing:`` block: a known scheme with its keys, rates in [0, 1] (per_modality: mappings of modality to
    rate, not all 1), non-dedicated mode; checked against the protocol's data set when it is registered."""
    block = data.get("missing")
    if block is None:
        return
    where = f"{path}: missing"
    _check_types(where, block, MISSING_KEYS)
    for key in ("scheme", "rates"):
        if key not in block:
            raise ProtocolError(f"{where}: missing required key {key!r}")
    scheme = block["scheme"]
    if scheme not in MISSING_SCHEMES:
        raise ProtocolError(f"{where}.scheme {scheme!r}; expected one of {list(MISSING_SCHEMES)}")
    if scheme == "modality_rate" and "modality" not in block:
        raise ProtocolError(f"{where}: scheme modality_rate needs the key 'modality' (the rarely present one)")
    if scheme == "slots" and "modality" in block:
        raise ProtocolError(f"{where}.modality: scheme slots drops every modality alike; remove the key")
    if scheme == "mnar":
        for key, what in (("attribute", "the case attribute the absence depends on"), ("modality", "the modality that goes missing")):
            if key not in block:
                raise ProtocolError(f"{where}: scheme mnar needs the key {key!r} ({what})")
    extra = sorted(set(block) - {"scheme", "rates", *SCHEME_KEYS[scheme]})
    if extra:
        raise ProtocolError(f"{where}.{extra[0]}: scheme {scheme} takes no {extra[0]!r}; its keys are "
                            f"{['scheme', 'rates', *SCHEME_KEYS[scheme]]}")
    rates = block["rates"]
    if scheme == "per_modality":
        if not rates:
            raise ProtocolError(f"{where}.rates must be a non-empty list of mappings of modality to missing rate, got []")
        for i, vector in enumerate(rates):
            if not isinstance(vector, dict) or not vector or not all(isinstance(k, str) and _is_rate(v) for k, v in vector.items()):
                raise ProtocolError(f"{where}.rates[{i}]={vector!r}: expected a mapping of each modality to its missing rate in "
                                    f"[0, 1], e.g. {{FLAIR: 0.7, T1: 0.1, T1c: 0.3, T2: 0.9}}")
            if all(v == 1 for v in vector.values()):
                raise ProtocolError(f"{where}.rates[{i}]={vector!r}: every rate is 1; at least one modality needs a rate below 1")
        if len({tuple(sorted(v.items())) for v in rates}) != len(rates):
            raise ProtocolError(f"{where}.rates: a vector is listed twice")
    else:
        if not rates or not all(_is_rate(r) for r in rates):
            raise ProtocolError(f"{where}.rates must be a non-empty list of numbers in [0, 1], got {rates!r}")
        if len(set(rates)) != len(rates):
            raise ProtocolError(f"{where}.rates: a rate is listed twice")
    if block.get("eval", "subsets") not in EVALS:
        raise ProtocolError(f"{where}.eval {block['eval']!r}; expected one of {list(EVALS)}")
    if scheme in TRAINING_SCHEMES and block.get("eval", "subsets") != "subsets":
        raise ProtocolError(f"{where}.eval {block['eval']!r}: scheme {scheme} masks the training split only; its test cases are "
                            f"complete and scored on the listed subsets (eval: subsets)")
    if block.get("direction", DIRECTIONS[0]) not in DIRECTIONS:
        raise ProtocolError(f"{where}.direction {block['direction']!r}; expected one of {list(DIRECTIONS)} (which cases lose "
                            f"the modality more often)")
    if data["mode"] != "non_dedicated":
        raise ProtocolError(f"{where}: needs mode non_dedicated (the masks fix each sample's training availability)")
    own = data.get("dataset", DEFAULT_DATASET)
    if own in registry.dataset_names():
        check_missing_for(where, block, _plugin("dataset", own, f"{path}: dataset"))


def check_missing_for(where: str, block: dict[str, Any], dataset_cls: type[Dataset]) -> None:
    """A well-formed ``missing:`` block against a data set: its task, modalities and case attributes."""
    scheme, mods = block["scheme"], list(dataset_cls.modalities)
    if scheme not in TRAINING_SCHEMES and dataset_cls.task != "classification":
        raise ProtocolError(f"{where}.scheme {scheme!r}: per-sample missing rates of this scheme apply to classification data "
                            f"sets; {dataset_cls.name!r} is {dataset_cls.task} (incomplete training data: {list(TRAINING_SCHEMES)})")
    if scheme != "slots" and len(mods) < 2:
        raise ProtocolError(f"{where}: scheme {scheme} needs a data set with at least two modalities; {dataset_cls.name!r} has {mods}")
    if scheme in ("modality_rate", "mnar") and block.get("modality") not in mods:
        raise ProtocolError(f"{where}.modality: {block.get('modality')!r} is not a modality of {dataset_cls.name!r} ({mods})")
    if scheme == "per_modality":
        for i, vector in enumerate(block["rates"]):
            if sorted(vector) != sorted(mods):
                raise ProtocolError(f"{where}.rates[{i}]={vector!r}: expected a missing rate for each modality of "
                                    f"{dataset_cls.name!r}, no more: {mods}")
    if scheme == "mnar" and block["attribute"] not in dataset_cls.attribute_names():
        offered = dataset_cls.attribute_names()
        raise ProtocolError(f"{where}.attribute {block['attribute']!r}: data set {dataset_cls.name!r} offers "
                            f"{sorted(offered) if offered else 'no case attributes'}")


def load_protocol(path: Path) -> Protocol:
    """Read and validate a protocol file."""
    data = _read(path)
    for key in REQUIRED:
        if key not in data:
            raise ProtocolError(f"{path}: missing required key {key!r}")
    if data["mode"] not in MODES:
        raise ProtocolError(f"{path}: mode {data['mode']!r}; expected one of {list(MODES)}")
    if not data["seeds"]:
        raise ProtocolError(f"{path}: seeds: expected a non-empty list of integers")
    for i, s in enumerate(data["seeds"]):
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s <= MAX_SEED:
            raise ProtocolError(f"{path}: seeds[{i}] must be an integer in [0, {MAX_SEED}], got {s!r}")
    if not data["subsets"]:
        raise ProtocolError(f"{path}: subsets: expected a non-empty list of modality subsets (each is a row of the tables)")
    for name, b in data["budgets"].items():
        _check_budget(path, name, b, data.get("dataset", DEFAULT_DATASET))
    if data["default_budget"] not in data["budgets"]:
        raise ProtocolError(f"{path}: default_budget {data['default_budget']!r} is not among budgets {list(data['budgets'])}")
    _check_values(f"{path}: training", data.get("training", {}), TRAINING_DEFAULTS, TRAINING_RULES)
    _check_values(f"{path}: metric", data.get("metric", {}), METRIC_DEFAULTS, METRIC_RULES)
    _check_method_params(path, data)
    _check_missing(path, data)
    if data["mode"] == "timing":
        timing = data.get("timing", {})
        _check_values(f"{path}: timing", timing, dict.fromkeys(TIMING_KEYS, 0), dict.fromkeys(TIMING_KEYS, Between(0, integer=True)))
        for key in TIMING_KEYS:
            if key not in timing:
                raise ProtocolError(f"{path}: timing.{key}: mode timing needs a non-negative integer")
    if data.get("eval_on", "own") not in EVAL_ON:
        raise ProtocolError(f"{path}: eval_on must be one of {list(EVAL_ON)}")
    try:  # SLURM resources of every run of this protocol (missbench/experiment/resources.py)
        check_resources(f"{path}: slurm", data.get("slurm", {}))
    except ResourceError as e:
        raise ProtocolError(str(e)) from None
    try:
        weights = parse_weights(f"{path}: subset_weights", data["subset_weights"], tuple(data["subsets"])) \
            if "subset_weights" in data else None
    except WeightsError as e:
        raise ProtocolError(str(e)) from None
    return Protocol(
        name=path.stem, path=path, mode=data["mode"], dataset=data.get("dataset", DEFAULT_DATASET), subsets=tuple(data["subsets"]),
        seeds=tuple(data["seeds"]), default_budget=data["default_budget"], description=data.get("description", ""),
        budgets={name: BudgetBlock({k: v for k, v in b.items() if k not in BUDGET_DATASET_KEYS}, b.get("dataset", {}),
                                   b.get("datasets", {})) for name, b in data["budgets"].items()},
        training=data.get("training", {}), method_params=data.get("method_params", {}), metric=data.get("metric", {}),
        grid={m: blocks if isinstance(blocks, list) else [blocks] for m, blocks in data.get("grid", {}).items()},
        eval_on=data.get("eval_on", "own"), slurm=data.get("slurm", {}), missing=data.get("missing", {}),
        timing=data.get("timing", {}), subset_weights=weights,
    )
