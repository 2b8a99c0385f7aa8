"""Modality subsets in one canonical order: by size, then by the data set's modality order."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations


@dataclass(frozen=True)
class Subset:
    """A non-empty set of available modalities, kept in the data set's modality order."""

    modalities: tuple[str, ...]
    all_modalities: tuple[str, ...]

    @property
    def label(self) -> str:
        """Human-readable name, e.g. ``FLAIR+T1c``."""
        return "+".join(self.modalities)

    @property
    def code(self) -> int:
        """Bit code: bit i is set when modality i (in data set order) is available."""
        return sum(1 << i for i, m in enumerate(self.all_modalities) if m in self.modalities)

    @property
    def mask(self) -> tuple[bool, ...]:
        """Availability flags in data set order."""
        return tuple(m in self.modalities for m in self.all_modalities)

    def __len__(self) -> int:
        return len(self.modalities)


def all_subsets(modalities: tuple[str, ...] | list[str]) -> list[Subset]:
    """All 2^M - 1 non-empty subsets, ordered by size, then lexicographically by modality index."""
    mods = tuple(modalities)
    return [
        Subset(tuple(mods[i] for i in idx), mods)
        for k in range(1, len(mods) + 1)
        for idx in combinations(range(len(mods)), k)
    ]


def parse_subset(text: str, modalities: tuple[str, ...] | list[str]) -> Subset:
    """Parse ``"FLAIR+T1c"`` (case-insensitive names, any order) into a canonical Subset."""
    mods = tuple(modalities)
    lookup = {m.lower(): m for m in mods}
    names = [t.strip() for t in str(text).split("+")]
    unknown = [n for n in names if n.lower() not in lookup]
    if unknown:
        raise ValueError(
            f"subset {text!r}: unknown modality {unknown[0]!r}; "
            f"expected names from {list(mods)} joined by '+'"
        )
    chosen = {lookup[n.lower()] for n in names}
    if len(chosen) != len(names):
        raise ValueError(f"subset {text!r} names a modality twice")
    return Subset(tuple(m for m in mods if m in chosen), mods)


def subset_from_mask(mask: tuple[bool, ...] | list[bool], modalities: tuple[str, ...]) -> Subset:
    """The Subset whose availability flags are ``mask``."""
    return Subset(tuple(m for m, a in zip(modalities, mask) if a), tuple(modalities))
