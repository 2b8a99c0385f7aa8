"""Declared parameters: a default gives a parameter's type, a rule (`OneOf`, `Between`, `Shape`) its
allowed values. Methods and data sets declare theirs beside their defaults, training settings, budgets,
the metric policy and execution options beside theirs; `check_params` refuses a bad value with what is
allowed, before anything runs. This is the one rule engine: a `ParamError` names its key, and `at`
names the flag or file key the value came from instead.

Types follow the default: a bool takes only booleans, an int only integers, a float any number, a
str only strings; a None default takes None or whatever the rule allows (the rule says the type).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


class ParamError(ValueError):
    """A parameter that is unknown or out of its type or range; ``key`` names it, the message says what is
    allowed. ``detail`` is the message after the parameter's name (e.g. ``='abc': expected a number``)."""

    def __init__(self, message: str, key: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.detail = message if detail is None else detail

    def at(self, where: str) -> "ParamError":
        """The same error named by where the value came from: a flag (``--param shaspec.alpha``) or a file and key."""
        return ParamError(f"{where}{self.detail}", self.key, self.detail)


@dataclass(frozen=True)
class OneOf:
    """The value must be one of ``values``."""

    values: tuple[Any, ...]

    def __init__(self, *values: Any) -> None:
        object.__setattr__(self, "values", values)

    def allows(self, value: Any) -> bool:
        return value in self.values

    def describe(self) -> str:
        return f"one of {list(self.values)}"


@dataclass(frozen=True)
class Between:
    """A number in [low, high] (either end open with ``low_open``/``high_open``, None for unbounded);
    ``integer``: whole numbers only; ``even``: even integers only."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    even: bool = False

    def allows(self, value: Any) -> bool:
        if not _is_number(value) or not math.isfinite(value):
            return False
        if (self.integer or self.even) and not isinstance(value, int):
            return False
        if self.even and value % 2:
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        kind = "an even integer" if self.even else "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            return f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {self.high:g}"
        return kind


@dataclass(frozen=True)
class Shape:
    """A size per axis: an integer >= ``low`` (the same on every axis) or a list of ``length`` of them."""

    length: int = 3
    low: int = 1

    def allows(self, value: Any) -> bool:
        items = value if isinstance(value, list | tuple) else [value]
        if isinstance(value, list | tuple) and len(value) != self.length:
            return False
        return all(isinstance(v, int) and not isinstance(v, bool) and v >= self.low for v in items)

    def describe(self) -> str:
        return f"an integer >= {self.low} or a list of {self.length} such integers"


Rule = OneOf | Between | Shape


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def type_name(default: Any) -> str:
    """What a default's type admits, in words."""
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "a string"
    return type(default).__name__


def _type_ok(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return _is_number(value)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, tuple | list):
        return isinstance(value, tuple | list)
    return True


def check_value(key: str, value: Any, default: Any, rule: Rule | None = None) -> None:
    """Raise `ParamError` unless ``value`` has ``default``'s type and passes ``rule``."""
    if default is None and value is None:
        return
    detail = None
    if default is not None and not _type_ok(value, default):
        detail = f"={value!r}: expected {rule.describe() if rule is not None else type_name(default)}"
    elif rule is not None and not rule.allows(value):
        detail = f"={value!r}: expected {rule.describe()}" + (" or null" if default is None else "")
    elif _is_number(value) and not math.isfinite(value):
        detail = f"={value!r}: expected a finite number"
    if detail is not None:
        raise ParamError(f"{key}{detail}", key, detail)


_NO_DEFAULT = object()


def normalised(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """One form per setting, for identities: each value in its declared type (an integer given for a float
    parameter becomes a float, a tuple a list) and the values equal to their default left out, sorted by key."""
    out = {}
    for key in sorted(values):
        value, default = values[key], defaults.get(key, _NO_DEFAULT)
        if isinstance(default, float) and _is_number(value):
            value = float(value)
        elif isinstance(value, tuple):
            value = list(value)
        if default is _NO_DEFAULT or value != (list(default) if isinstance(default, tuple) else default):
            out[key] = value
    return out


def check_declared(where: str, values: dict[str, Any], defaults: dict[str, Any], rules: dict[str, Rule], sep: str = ".") -> None:
    """The one check of named values against their declarations (``defaults`` give names and types, ``rules`` the
    allowed values), in one wording wherever the values come from: ``<where>: unknown parameter 'k'; expected one
    of [...]`` and ``<where><sep>k=<value>: expected ...`` (``where`` a flag, a file and key, or an owner)."""
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ParamError(f"{where}: unknown parameter {unknown[0]!r}; expected one of {sorted(defaults)}", unknown[0],
                         f": unknown parameter; expected one of {sorted(defaults)}")
    for key, value in values.items():
        try:
            check_value(key, value, defaults[key], rules.get(key))
        except ParamError as e:
            raise ParamError(f"{where}{sep}{e}", key, e.detail) from None


def check_params(owner: str, params: dict[str, Any], defaults: dict[str, Any], rules: dict[str, Rule]) -> None:
    """`check_declared` for an object's own parameters (``owner`` names whose, e.g. "method 'shaspec'")."""
    check_declared(owner, params, defaults, rules, sep=": parameter ")
