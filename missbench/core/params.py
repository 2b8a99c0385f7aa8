"""Declared parameters: a default gives a parameter's type, a rule (`OneOf`, `Between`) its allowed
values. Methods and data sets declare theirs beside their defaults; `check_params` refuses a bad value
with what is allowed, before anything runs.

Types follow the default: a bool takes only booleans, an int only integers, a float any number, a
str only strings; a None default takes None or whatever the rule allows (the rule says the type).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


class ParamError(ValueError):
    """A parameter that is unknown or out of its type or range; ``key`` names it, the message says what is allowed."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


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


Rule = OneOf | Between


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
    if default is not None and not _type_ok(value, default):
        allowed = rule.describe() if rule is not None else type_name(default)
        raise ParamError(f"{key}={value!r}: expected {allowed}", key)
    if rule is not None and not rule.allows(value):
        raise ParamError(f"{key}={value!r}: expected {rule.describe()}" + (" or null" if default is None else ""), key)
    if _is_number(value) and not math.isfinite(value):
        raise ParamError(f"{key}={value!r}: expected a finite number", key)


def check_params(owner: str, params: dict[str, Any], defaults: dict[str, Any], rules: dict[str, Rule]) -> None:
    """Refuse unknown names and bad values of ``params`` (``owner`` names whose, e.g. "method 'shaspec'")."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ParamError(f"{owner}: unknown parameter {unknown[0]!r}; expected one of {sorted(defaults)}", unknown[0])
    for key, value in params.items():
        try:
            check_value(key, value, defaults[key], rules.get(key))
        except ParamError as e:
            raise ParamError(f"{owner}: parameter {e}", key) from None
