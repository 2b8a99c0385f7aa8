"""Published BraTS2018 results (published.yaml): each number with its paper, where it was read, and its BraTS
protocol (A: the U-HVED / RFNet local split; B: the BraTS portal),
and the rule that keeps the two protocols apart: never in one table, never beside runs of the other."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: The data file of published numbers.
DATA = Path(__file__).with_name("published.yaml")
REGIONS = ("ET", "TC", "WT")


class Refused(ValueError):
    """Published numbers that must not be shown together or beside these runs; the message says why."""


@dataclass(frozen=True)
class Published:
    """One method's published Dice (%): per region and subset where the paper prints them, and averages."""

    id: str
    method: str
    protocol: str
    split: str
    citation: str
    source: str
    et: str
    dice: dict[str, dict[str, float]]
    average: dict[str, float]

    @property
    def label(self) -> str:
        """The column or row name: the method, marked as published."""
        return f"{self.method} (published)"


def load_published(path: Path = DATA) -> tuple[dict[str, str], list[Published]]:
    """The protocols (letter -> description) and every entry of the data file, checked: a known protocol,
    15 values per region in the file's subset order, averages for every region."""
    data = yaml.safe_load(path.read_text())
    subsets, protocols = list(data["subsets"]), dict(data["protocols"])
    out = []
    for e in data["entries"]:
        where = f"{path.name}: entry {e.get('id')!r}"
        if e.get("protocol") not in protocols:
            raise ValueError(f"{where}: protocol {e.get('protocol')!r}, expected one of {sorted(protocols)}")
        dice = {}
        for region, values in (e.get("dice") or {}).items():
            if region not in REGIONS or len(values) != len(subsets):
                raise ValueError(f"{where}: dice.{region} needs {len(subsets)} values (one per subset) for a region in {REGIONS}")
            dice[region] = dict(zip(subsets, map(float, values)))
        if set(e.get("average", {})) != set(REGIONS):
            raise ValueError(f"{where}: average needs {', '.join(REGIONS)}")
        out.append(Published(str(e["id"]), str(e["method"]), str(e["protocol"]), str(e["split"]), str(e["citation"]),
                             str(e["source"]), str(e["et"]), dice, {k: float(v) for k, v in e["average"].items()}))
    return protocols, out


def select(protocol: str, path: Path = DATA) -> list[Published]:
    """Every published entry of one protocol (A or B)."""
    protocols, entries = load_published(path)
    if protocol not in protocols:
        raise Refused(f"unknown BraTS protocol {protocol!r}; published numbers exist for {', '.join(sorted(protocols))}")
    return [e for e in entries if e.protocol == protocol]


def one_protocol(entries: list[Published]) -> str:
    """The protocol all ``entries`` share; refuses a mix (their numbers are not comparable)."""
    found = sorted({e.protocol for e in entries})
    if len(found) != 1:
        raise Refused(f"refusing to put BraTS2018 protocol {' and '.join(found)} numbers in one table: the protocols "
                      f"score different cases (published.yaml's header says which)")
    return found[0]


def brats_protocol(setting: dict[str, Any]) -> str | None:
    """The BraTS2018 protocol of runs with this (flattened) setting: A with a split file, B with split=all,
    None for any other data set."""
    if setting.get("dataset") != "brats2018":
        return None
    split = setting.get("dataset_params.split")
    return None if split is None else "B" if split == "all" else "A"


def check_pairing(entries: list[Published], setting: dict[str, Any]) -> None:
    """Refuse to put ``entries`` beside runs of another protocol (or of another data set)."""
    protocol, runs = one_protocol(entries), brats_protocol(setting)
    if runs != protocol:
        what = f"BraTS2018 protocol {runs}" if runs else f"data set {setting.get('dataset')}, not BraTS2018 protocol A or B"
        raise Refused(f"refusing to put published protocol {protocol} numbers beside runs of {what}")


def published_average(entry: Published, region: str) -> float:
    """The paper's printed average over the 15 subsets of one region."""
    return entry.average.get(region, math.nan)
