"""Subset weights for a weighted Avg row: how often each modality subset occurs where a reader will use a method,
declared in a protocol file (``subset_weights:``) with its source, so tables show it beside the uniform Avg.

Two forms, each with a ``source`` (who says the subsets occur this often):
``weights: {<subset>: w}`` gives them directly (any non-negative numbers, normalised; a listed subset left out
weighs 0); ``missing_rates: {<modality>: p}`` derives them from independent per-modality absence
(P(S) = prod over S of (1 - p) x prod over the rest of p), as in PASSION's per-modality missing rates. Either is
normalised over the protocol's subsets (over all 15: conditioned on at least one modality present).
Weights are a reading of stored rows, never part of a run's identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

KEYS = ("source", "weights", "missing_rates")


class WeightsError(ValueError):
    """A malformed ``subset_weights`` block; the message names the file and the key."""


@dataclass(frozen=True)
class SubsetWeights:
    """Normalised weights (summing to 1) by subset, keyed by the subset's set of modality names."""

    source: str
    weights: dict[frozenset[str], float]

    def of(self, label: str) -> float:
        """The weight of the subset ``label`` ("FLAIR+T1c"; any order), 0 when not declared."""
        return self.weights.get(modalities_of(label), 0.0)

    def describe(self) -> str:
        """One line for a caption: the non-zero weights in percent and their source."""
        shown = ", ".join(f"{'+'.join(sorted(s))} {100 * w:.1f}%" for s, w in sorted(self.weights.items(), key=lambda x: -x[1]) if w > 0)
        return f"{shown} (source: {self.source})"


def modalities_of(label: str) -> frozenset[str]:
    return frozenset(part.strip() for part in label.split("+") if part.strip())


def _number(where: str, value: Any, low: float, high: float, high_open: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and low <= value \
        and (value < high if high_open else value <= high)
    if not ok:
        raise WeightsError(f"{where}: {value!r} is not a number in [{low:g}, {high:g}{')' if high_open else ']'}")
    return float(value)


def parse_weights(where: str, block: Any, subsets: tuple[str, ...]) -> SubsetWeights:
    """``block`` (a protocol's ``subset_weights``) checked against the protocol's ``subsets`` and normalised."""
    if not isinstance(block, dict):
        raise WeightsError(f"{where}: expected a mapping with 'source' and one of 'weights' or 'missing_rates'")
    unknown = sorted(set(block) - set(KEYS))
    if unknown:
        raise WeightsError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(KEYS)}")
    if not isinstance(block.get("source"), str) or not block["source"].strip():
        raise WeightsError(f"{where}.source: required, a non-empty text naming where the frequencies come from")
    if ("weights" in block) == ("missing_rates" in block):
        raise WeightsError(f"{where}: give exactly one of 'weights' (per subset) or 'missing_rates' (per modality)")
    listed = {modalities_of(s): s for s in subsets}
    raw: dict[frozenset[str], float] = {}
    if "weights" in block:
        given = block["weights"]
        if not isinstance(given, dict) or not given:
            raise WeightsError(f"{where}.weights: expected a mapping of subset to weight, got {given!r}")
        for label, value in given.items():
            key = modalities_of(str(label))
            if key not in listed:
                raise WeightsError(f"{where}.weights: {label!r} is not one of the protocol's subsets ({', '.join(subsets)})")
            raw[key] = _number(f"{where}.weights.{label}", value, 0, math.inf, True)
    else:
        rates = block["missing_rates"]
        modalities = sorted(set().union(*listed))
        if not isinstance(rates, dict) or sorted(map(str, rates)) != modalities:
            raise WeightsError(f"{where}.missing_rates: expected a rate for each of {', '.join(modalities)}, got {rates!r}")
        p = {m: _number(f"{where}.missing_rates.{m}", rates[m], 0, 1, True) for m in modalities}
        raw = {key: math.prod(1 - p[m] if m in key else p[m] for m in modalities) for key in listed}
    total = sum(raw.values())
    if total <= 0:
        raise WeightsError(f"{where}: the weights sum to 0; at least one subset needs a positive weight")
    return SubsetWeights(block["source"].strip(), {key: raw.get(key, 0.0) / total for key in listed})
