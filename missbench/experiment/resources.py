"""SLURM resources: a YAML file, a protocol's ``slurm:`` block and ``--resource`` flags, merged and checked.

Order, later wins: DEFAULTS < the file's top level < the file's ``methods.<name>`` block < the
protocol's ``slurm:`` block < ``--resource KEY=VALUE`` flags. Times are strings in sbatch's formats
("MM", "HH:MM:SS", "D-HH:MM:SS"): an unquoted ``10:30`` reads as the integer 630 in YAML, so a
number is refused rather than guessed. Unknown keys and wrong types are errors naming file and key.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

#: Resource keys and their types; ``sbatch`` holds extra ``#SBATCH --key=value`` lines as a mapping.
KEYS: dict[str, type | tuple[type, ...]] = {
    "partition": str, "time": str, "gpus": int, "cpus": int, "mem": str, "account": str, "qos": str,
    "constraint": str, "sbatch": dict, "setup": list, "requeues": int, "signal_delay_s": int,
}
#: Explicit defaults (never submitit's silent 5 minutes). No partition, account, qos, constraint or
#: mem: the cluster's defaults for those.
DEFAULTS: dict[str, Any] = {"time": "04:00:00", "cpus": 2, "gpus": 0, "requeues": 3, "signal_delay_s": 120,
                            "sbatch": {}, "setup": []}
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
#: Seconds a job needs to start (interpreter, imports, data, the first iterations): its time limit minus
#: ``signal_delay_s`` must leave at least this, or SLURM's warning signal comes before the run can resume.
STARTUP_S = 60
#: How much earlier than ``signal_delay_s`` sbatch may send the warning signal ("Due to the resolution of event
#: handling by Slurm, the signal may be sent up to 60 seconds earlier than specified": sbatch(1), --signal).
SIGNAL_EARLY_S = 60


class ResourceError(ValueError):
    """A malformed resources file, protocol ``slurm:`` block or ``--resource`` flag."""


def time_minutes(text: str) -> int:
    """Minutes (rounded up) of an sbatch time: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    return math.ceil(time_seconds(text) / 60)


def time_seconds(text: str) -> int:
    """Seconds of an sbatch time (`time_minutes` lists the formats)."""
    match = _TIME.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not an sbatch time (MM, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = (int(g) if g is not None else None for g in match.groups())
    if days is not None:  # D-H[:M[:S]]
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # H:M:S
        seconds = a * 3600 + b * 60 + c
    else:  # M or M:S
        seconds = a * 60 + (b or 0)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive time")
    return seconds


def check(where: str, block: Any) -> dict[str, Any]:
    """``block`` as a validated resources mapping; errors name ``where`` and the key."""
    if not isinstance(block, dict):
        raise ResourceError(f"{where}: expected a mapping of resource keys, got {type(block).__name__}")
    for key, value in block.items():
        if key not in KEYS:
            raise ResourceError(f"{where}: unknown key {key!r}; expected one of {sorted(KEYS)}")
        want = KEYS[key]
        if key == "time" and isinstance(value, int) and not isinstance(value, bool):
            raise ResourceError(f"{where}: time {value!r} is a number; quote times, e.g. time: \"10:30:00\" "
                                f"(unquoted, YAML reads 10:30 as 630)")
        if not isinstance(value, want) or isinstance(value, bool):
            raise ResourceError(f"{where}: key {key!r} must be {want.__name__}, got {type(value).__name__} {value!r}")
        if key == "time":
            try:
                time_minutes(value)
            except ValueError as e:
                raise ResourceError(f"{where}: time: {e}") from None
        if key in ("gpus", "cpus", "requeues", "signal_delay_s") and value < (1 if key == "cpus" else 0):
            raise ResourceError(f"{where}: {key} must be {'positive' if key == 'cpus' else 'non-negative'}, got {value}")
        if key == "setup" and not all(isinstance(line, str) for line in value):
            raise ResourceError(f"{where}: setup must be a list of shell lines (strings)")
    return dict(block)


def load_file(path: Path, methods_known: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(global resources, per-method resources) of a resources YAML file."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ResourceError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ResourceError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ResourceError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    methods = data.pop("methods", {})
    if not isinstance(methods, dict):
        raise ResourceError(f"{path}: methods must map a method name to its resources")
    for name in methods:
        if name not in methods_known:
            raise ResourceError(f"{path}: methods.{name}: unknown method; valid: {', '.join(methods_known)}")
    return check(str(path), data), {m: check(f"{path}: methods.{m}", b) for m, b in methods.items()}


def parse_flags(items: list[str]) -> dict[str, Any]:
    """``--resource KEY=VALUE`` flags; values stay strings except the integer keys (so 10:30 stays a time)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ResourceError(f"--resource {item!r}: expected KEY=VALUE")
        if KEYS.get(key) is int:
            try:
                out[key] = int(value)
            except ValueError:
                raise ResourceError(f"--resource {key}: expected an integer, got {value!r}") from None
        elif KEYS.get(key) in (list, dict):
            out[key] = yaml.safe_load(value)
        else:
            out[key] = value
    return check("--resource", out)


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers win key by key; ``sbatch`` mappings merge and ``setup`` lines add up."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key == "sbatch":
                out[key] = {**out.get(key, {}), **value}
            elif key == "setup":
                out[key] = [*out.get(key, []), *value]
            else:
                out[key] = value
    return out


def resolve(method: str, file: tuple[dict[str, Any], dict[str, dict[str, Any]]] | None,
            protocol: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """The resources of one method's runs: defaults < file < file's method block < protocol < flags. Refuses a
    time limit that leaves less than STARTUP_S seconds before the warning signal (``signal_delay_s`` before the end,
    and up to SIGNAL_EARLY_S earlier)."""
    glob, per_method = file or ({}, {})
    res = merge(DEFAULTS, glob, per_method.get(method, {}), protocol, flags)
    left = time_seconds(res["time"]) - res["signal_delay_s"] - SIGNAL_EARLY_S
    if left < STARTUP_S:
        raise ResourceError(f"resources of {method}: time {res['time']!r} minus signal_delay_s {res['signal_delay_s']} and the "
                            f"{SIGNAL_EARLY_S} s by which sbatch may send its warning signal early leaves {left} s; a job needs "
                            f"at least {STARTUP_S} s to start (raise time or lower signal_delay_s)")
    return res


def slurm_parameters(res: dict[str, Any]) -> dict[str, Any]:
    """submitit ``update_parameters`` keywords of a resolved resources mapping."""
    params: dict[str, Any] = {"timeout_min": time_minutes(res["time"]), "cpus_per_task": res["cpus"],
                              "slurm_signal_delay_s": res["signal_delay_s"], "slurm_setup": list(res["setup"]),
                              "slurm_additional_parameters": dict(res["sbatch"])}
    if res["gpus"]:
        params["gpus_per_node"] = res["gpus"]
    for key in ("partition", "account", "qos", "constraint", "mem"):
        if res.get(key):
            params[f"slurm_{key}"] = res[key]
    return params
