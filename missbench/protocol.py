"""Protocol files (protocols/*.yaml): parsing, strict validation and expansion into run specs.

A protocol names its mode (non_dedicated: one model per method and seed trained with random
modality dropping, evaluated on every listed subset; dedicated: one model per listed subset,
evaluated on that subset, or on all with ``eval_on: all``), the evaluation subsets in table order,
seeds, named budgets, training overrides applied to every method (so a comparison can hold them
equal), fixed method parameters, parameter grids and the metric policy. ``inherit: <protocol>``
starts from another file: mappings merge key by key, anything else is replaced.
Unknown keys and wrong types are errors naming the file and the key.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from missbench import registry
from missbench.dataset import Dataset
from missbench.method import TrainingDefaults
from missbench.metrics import EMPTY_POLICIES
from missbench.spec import Budget, RunSpec
from missbench.subsets import parse_subset

MODES = ("non_dedicated", "dedicated")
TOP_KEYS = {
    "description": str, "mode": str, "dataset": str, "subsets": list, "seeds": list, "budgets": dict,
    "default_budget": str, "training": dict, "method_params": dict, "metric": dict, "grid": dict,
    "eval_on": str, "inherit": str,
}
EVAL_ON = ("own", "all")
_UNSET = object()
REQUIRED = ("mode", "subsets", "seeds", "budgets", "default_budget")
BUDGET_KEYS = {"iterations": int, "patch": (int, list), "batch": int, "checkpoint_every": int,
               "overlap": float, "log_every": int, "dataset": dict}
METRIC_KEYS = {"empty": str, "et_threshold": int}
TRAINING_KEYS = {f.name: f.type for f in fields(TrainingDefaults)}


class ProtocolError(ValueError):
    """A malformed protocol file; the message names the file and the key."""


@dataclass(frozen=True)
class Protocol:
    name: str
    path: Path
    data: dict[str, Any]

    @property
    def mode(self) -> str:
        return self.data["mode"]

    def budget(self, name: str | None) -> tuple[str, Budget, dict[str, Any]]:
        """(name, budget, data set overrides) of the named budget, or the file's default."""
        name = name or self.data["default_budget"]
        if name not in self.data["budgets"]:
            raise ProtocolError(f"{self.path}: unknown budget {name!r}; valid: {', '.join(self.data['budgets'])}")
        b = dict(self.data["budgets"][name])
        ds = b.pop("dataset", {})
        patch = b.pop("patch")
        patch = tuple(patch) if isinstance(patch, list) else (patch,) * 3
        return name, Budget(patch=patch, **b), ds

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
        """The run specs of this protocol for ``methods`` on ``dataset_cls``, in a fixed order."""
        mods = dataset_cls.modalities
        subsets = []
        for i, text in enumerate(self.data["subsets"]):
            try:
                subsets.append(parse_subset(text, mods).label)
            except ValueError as e:
                raise ProtocolError(f"{self.path}: subsets[{i}]: {e} (data set {dataset_cls.name!r})") from None
        if len(set(subsets)) != len(subsets):
            raise ProtocolError(f"{self.path}: subsets: a subset is listed twice")
        budget_name, b, ds_overrides = self.budget(budget)
        metric = {"empty": "one", "et_threshold": dataset_cls.et_threshold, **self.data.get("metric", {})}
        fixed = self.data.get("method_params", {})
        own = self.data.get("eval_on", "own") == "own"
        specs = []
        for method in methods:
            for point in self.grid_points(method):
                params = {**fixed.get(method, {}), **point, **(method_params or {}).get(method, {})}
                # Settings equal to the method's defaults are left out, so one model has one run id.
                params = {k: v for k, v in params.items() if registry.method_class(method).defaults.get(k, _UNSET) != v}
                for seed in seeds if seeds is not None else self.data["seeds"]:
                    trains: list[str | None] = [None] if self.mode == "non_dedicated" else list(subsets)
                    for train in trains:
                        specs.append(RunSpec(
                            protocol=self.name, mode=self.mode, method=method, method_params=params,
                            dataset=dataset_cls.name, dataset_params={**dataset_cls.defaults, **ds_overrides, **dataset_params},
                            train_subset=train, eval_subsets=(train,) if train is not None and own else tuple(subsets),
                            seed=int(seed), budget=b, budget_name=budget_name,
                            training={**self.data.get("training", {}), **(training or {})}, metric=metric,
                        ))
        return list({s.run_id: s for s in specs}.values())

    def grid_points(self, method: str) -> list[dict[str, Any]]:
        """The parameter settings of ``method``'s grid: the union of each block's Cartesian product."""
        blocks = self.data.get("grid", {}).get(method)
        if blocks is None:
            return [{}]
        points = []
        for block in blocks if isinstance(blocks, list) else [blocks]:
            keys = list(block)
            points += [dict(zip(keys, values)) for values in itertools.product(*(block[k] for k in keys))]
        return points


def _check_types(where: str, data: dict[str, Any], schema: dict[str, Any]) -> None:
    for key, value in data.items():
        if key not in schema:
            raise ProtocolError(f"{where}: unknown key {key!r}; expected one of {sorted(schema)}")
        want = schema[key]
        if want is float:
            want = (int, float)
        if isinstance(want, type | tuple) and (not isinstance(value, want) or isinstance(value, bool) and want is not bool):
            raise ProtocolError(f"{where}: key {key!r} must be {_type_name(schema[key])}, got {type(value).__name__} {value!r}")


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
    base = path.parent / (parent if parent.endswith((".yaml", ".yml")) else f"{parent}.yaml")
    if not base.exists():
        raise ProtocolError(f"{path}: inherit {parent!r}: no file {base}")
    return _merge(_read(base, (*chain, path.resolve())), data)


def load_protocol(path: Path) -> Protocol:
    """Read and validate a protocol file."""
    data = _read(path)
    for key in REQUIRED:
        if key not in data:
            raise ProtocolError(f"{path}: missing required key {key!r}")
    if data["mode"] not in MODES:
        raise ProtocolError(f"{path}: mode {data['mode']!r}; expected one of {list(MODES)}")
    for i, s in enumerate(data["seeds"]):
        if not isinstance(s, int) or isinstance(s, bool):
            raise ProtocolError(f"{path}: seeds[{i}] must be an integer, got {s!r}")
    for name, b in data["budgets"].items():
        if not isinstance(b, dict):
            raise ProtocolError(f"{path}: budgets.{name} must be a mapping")
        _check_types(f"{path}: budgets.{name}", b, BUDGET_KEYS)
        for key in ("iterations", "patch", "batch", "checkpoint_every"):
            if key not in b:
                raise ProtocolError(f"{path}: budgets.{name}: missing required key {key!r}")
    if data["default_budget"] not in data["budgets"]:
        raise ProtocolError(f"{path}: default_budget {data['default_budget']!r} is not among budgets {list(data['budgets'])}")
    _check_types(f"{path}: training", data.get("training", {}), {k: (str if t == "str" else (int, float) if t == "float" else bool) for k, t in TRAINING_KEYS.items()})
    _check_types(f"{path}: metric", data.get("metric", {}), METRIC_KEYS)
    if data.get("metric", {}).get("empty", "one") not in EMPTY_POLICIES:
        raise ProtocolError(f"{path}: metric.empty must be one of {list(EMPTY_POLICIES)}")
    for method, params in data.get("method_params", {}).items():
        if not isinstance(params, dict):
            raise ProtocolError(f"{path}: method_params.{method} must be a mapping of parameter: value")
    if data.get("eval_on", "own") not in EVAL_ON:
        raise ProtocolError(f"{path}: eval_on must be one of {list(EVAL_ON)}")
    for method, blocks in data.get("grid", {}).items():
        for i, block in enumerate(blocks if isinstance(blocks, list) else [blocks]):
            if not isinstance(block, dict) or not all(isinstance(v, list) and v for v in block.values()):
                raise ProtocolError(f"{path}: grid.{method}[{i}] must map each parameter to a non-empty list of values")
    return Protocol(name=path.stem, path=path, data=data)
