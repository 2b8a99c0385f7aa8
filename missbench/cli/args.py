"""Argument helpers every subcommand shares: the one-line usage error and KEY=VALUE lists."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml

#: A number YAML 1.1 reads as a string (``1e-4``, ``5E3``: an exponent without a dot).
_EXPONENT_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


class UsageError(Exception):
    """A bad command line: printed as one line, exit status 2."""


def key_values(items: list[str], what: str) -> dict[str, Any]:
    """``KEY=VALUE`` items as a mapping; values read as YAML scalars (``3`` an int, ``true`` a bool, ``1e-4`` a float)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {item!r}: expected KEY=VALUE")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UsageError(f"{what} {item!r}: the value is not a YAML scalar") from None
        out[key] = float(parsed) if isinstance(parsed, str) and _EXPONENT_NUMBER.match(parsed) else parsed
    return out


def root_option(parser: argparse.ArgumentParser) -> None:
    """``--root DIR``: the benchmark root a command reads its plugins from and writes results/ into
    (missbench/experiment/root.py); the command passes ``args.root`` to ``use_root``."""
    parser.add_argument("--root", type=Path, default=None, metavar="DIR",
                        help="benchmark root: the folder whose methods/, datasets/, protocols/ are used and whose results/ "
                             "is written (default: the current directory when it holds methods/ or protocols/, else this checkout)")


def data_root_alias(argv: list[str]) -> list[str]:
    """``--data-root DIR`` (any command) is short for ``--dataset-param root=DIR`` (a real data set's folder)."""
    out, it = [], iter(argv)
    for a in it:
        if a == "--data-root" or a.startswith("--data-root="):
            value = a.partition("=")[2] if "=" in a else next(it, "")
            out += ["--dataset-param", f"root={json.dumps(value)}"]
        else:
            out.append(a)
    return out
