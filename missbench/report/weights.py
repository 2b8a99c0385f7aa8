"""A protocol's declared subset weights (missbench/core/subset_weights.py), read from its file when tables are made:
a reading of stored rows like the ET column, so editing them re-weights every table without a run."""

from __future__ import annotations

from typing import Any

import yaml

from missbench.core.subset_weights import SubsetWeights, WeightsError, parse_weights
from missbench.experiment import registry


def declared_weights(protocol: str) -> tuple[SubsetWeights | None, str]:
    """(the weights, "") of protocol ``protocol``'s file or the nearest file it inherits from that declares them;
    (None, why) when it declares none, is not found, or its block is malformed."""
    try:
        chain = registry.protocol_chain(registry.protocol_path(protocol))
    except registry.UnknownName:
        return None, f"no protocol file {protocol!r} in this root, so no weighted Avg"
    found: dict[str, Any] = {}
    for path in chain:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            return None, f"{path}: unreadable, so no weighted Avg"
        for key in ("subset_weights", "subsets"):
            if isinstance(data, dict) and key in data:
                found.setdefault(key, (path, data[key]))
    if "subset_weights" not in found:
        return None, ""
    path, block = found["subset_weights"]
    try:
        return parse_weights(f"{path}: subset_weights", block, tuple(found.get("subsets", (None, []))[1])), ""
    except WeightsError as e:
        return None, f"{e}; no weighted Avg"
