"""A sweep's values, checked before anything is written, by the one rule engine (missbench.core.params).

Protocol files are checked when they load (missbench.experiment.protocol: method and data set
parameters, training settings, budgets, the metric policy). Here: what the command line gives
(``--param``, ``--dataset-param``, ``--training``, the execution options, ``--out``), then every run
spec of the sweep as a whole: each distinct method setting is built on the meta device (no memory,
no weights), its data set instantiated, its training settings and metric policy resolved. A refusal
is `Invalid`: one line naming the flag or the file and key, the value and what is allowed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from missbench.core.dataset import Dataset
from missbench.core.execution import EXECUTION_DEFAULTS, EXECUTION_RULES, available_cores, check_device
from missbench.core.method import build_on_meta, count_parameters, meta_output_problem, unregistered
from missbench.core.params import Between, ParamError, Rule, check_value
from missbench.core.params import check_declared as core_check_declared
from missbench.core.tasks import get_task
from missbench.core.training import TRAINING_DEFAULTS, TRAINING_RULES
from missbench.experiment import registry
from missbench.experiment.registry import one_line
from missbench.experiment.spec import RunSpec, canonical

#: Run options that are counts (argparse dests); ``window_batch`` is Execution's own declaration.
OPTION_RULES: dict[str, Rule] = {**{key: Between(1, integer=True) for key in ("threads", "jobs", "array_parallelism", "max_array_size")},
                                 "window_batch": EXECUTION_RULES["window_batch"]}
OPTION_DEFAULTS: dict[str, Any] = {**dict.fromkeys(OPTION_RULES, 1), "window_batch": EXECUTION_DEFAULTS["window_batch"]}


class Invalid(ValueError):
    """A value the sweep refuses: one line naming the flag or the file and key, the value and what is allowed."""


@dataclass(frozen=True)
class Given:
    """The values the command line gave, so that an error names its flag."""

    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset_params: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)


def flag(key: str) -> str:
    """The flag of an option's argparse dest: ``window_batch`` -> ``--window-batch``."""
    return "--" + key.replace("_", "-")


def check_declared(where: str, values: dict[str, Any], defaults: dict[str, Any], rules: dict[str, Rule], sep: str = " ") -> None:
    """`missbench.core.params.check_declared` for values a flag gave (``where``, e.g. ``--param shaspec`` with ``sep``
    "."), as `Invalid`."""
    try:
        core_check_declared(where, values, defaults, rules, sep)
    except ParamError as e:
        raise Invalid(str(e)) from None


def check_given(given: Given, dataset_cls: type[Dataset]) -> None:
    """Each ``--param``, ``--dataset-param`` and ``--training`` value against its declaration."""
    for method, params in given.method_params.items():
        cls = registry.method_class(method)
        check_declared(f"--param {method}", params, cls.defaults, cls.constraints, sep=".")
    check_declared("--dataset-param", given.dataset_params, dataset_cls.defaults, dataset_cls.constraints)
    check_declared("--training", given.training, TRAINING_DEFAULTS, TRAINING_RULES)


def check_specs(specs: list[RunSpec]) -> None:
    """Every request of the sweep as a whole, for what single values cannot show (a combination a method or data
    set refuses): each distinct setting built once (each data set once), the method on the meta device."""
    datasets: dict[str, Dataset] = {}

    def dataset(name: str, params: dict[str, Any]) -> Dataset:
        key = f"{name} {canonical(params)}"
        if key not in datasets:
            datasets[key] = registry.dataset_class(name)(**params)
        return datasets[key]

    distinct = {(s.model.method, canonical(s.model.method_params), canonical(s.train_data), canonical(s.model.training),
                 s.score.dataset, canonical(s.eval_data), canonical(s.score.metric)): s for s in specs}
    for spec in distinct.values():
        model = spec.model
        try:
            ds, cls = dataset(model.dataset, spec.train_data), registry.method_class(model.method)
        except (ValueError, TypeError) as e:
            raise Invalid(str(e)) from None
        except Exception as e:  # noqa: BLE001 - a data set plugin's own code may raise anything
            raise Invalid(f"data set {model.dataset!r} cannot be built with {spec.train_data}: {one_line(e)}") from None
        try:
            method = build_on_meta(cls, get_task(ds.task, **ds.task_params()), ds.modalities, **model.method_params)
        except (ValueError, TypeError) as e:
            raise Invalid(str(e)) from None
        except Exception as e:  # noqa: BLE001 - a method plugin's own code may raise anything
            raise Invalid(f"method {model.method!r} cannot be built: {one_line(e)} (in its __init__)") from None
        problem = unregistered(method) or ("has no trainable parameters" if not count_parameters(method) else None) \
            or meta_output_problem(method, model.patch)
        if problem is not None:
            raise Invalid(f"method {model.method!r} {problem}")
        try:
            cls.training_for(ds.task).replace(**model.training)
            spec.score.policy(dataset(spec.score.dataset, spec.eval_data).et_threshold)
        except (ValueError, TypeError) as e:
            raise Invalid(str(e)) from None


def check_sweep(specs: list[RunSpec], given: Given, dataset_cls: type[Dataset]) -> None:
    """The command line's values (naming their flags), then every run spec of the sweep."""
    check_given(given, dataset_cls)
    check_specs(specs)


def check_options(options: dict[str, Any], here: bool = True) -> None:
    """Execution options by argparse dest (a None value was not given): counts of at least 1, the window batch,
    the device if given, which must exist and, when the work runs on this machine (``here``), be available,
    threads no more than the cores this process may use (``here``: more only slow every step down), a
    compile backend torch knows, and bf16 autocast only where it computes finite numbers."""
    try:
        for key, rule in OPTION_RULES.items():
            if options.get(key) is not None:
                check_value(key, options[key], OPTION_DEFAULTS[key], rule)
        if "device" in options:
            check_device(options["device"], here)
    except ParamError as e:
        raise Invalid(str(e.at(flag(e.key)))) from None
    cores = available_cores()
    if here and options.get("threads") is not None and options["threads"] > cores:
        raise Invalid(f"--threads={options['threads']}: expected an integer in [1, {cores}] (the cores this process may use: "
                      f"more threads than cores only slow every step down)")
    if options.get("compile"):
        import torch._dynamo

        if options["compile"] not in torch._dynamo.list_backends(exclude_tags=()):
            raise Invalid(f"--compile={options['compile']!r}: expected one of {torch._dynamo.list_backends()} (or a debug "
                          f"backend such as eager or aot_eager)")


def check_out(path: Path | str) -> None:
    """Refuse an empty path, a sweep folder that is a file, lies below a file, or whose nearest existing folder
    is not writable."""
    if not str(path).strip():
        raise Invalid("--out '': expected a folder (or a path to create one)")
    path = Path(path)
    for p in [path, *path.parents]:
        if p.exists():
            if not p.is_dir():
                raise Invalid(f"--out {path}: {p} is a file; expected a folder (or a path to create one)")
            if not os.access(p, os.W_OK | os.X_OK):
                raise Invalid(f"--out {path}: {p} is not writable")
            return
