"""Derm7pt (Kawahara et al., IEEE JBHI 2019), CMML's first data set: clinical and dermoscopic skin-lesion
images plus a table, read from the released layout (``release_v0``).

Layout under ``root`` (``--dataset-param root=PATH`` or the MISSBENCH_DERM7PT_ROOT environment variable):

    meta/meta.csv                   one row per case: diagnosis, the seven-point criteria, clinical
                                    metadata (elevation, location, sex, ...) and the image paths
                                    ``clinic`` and ``derm`` (relative to images/)
    meta/train_indexes.csv          the release's split: a column ``indexes`` of meta.csv row numbers
    meta/valid_indexes.csv
    meta/test_indexes.csv
    images/<clinic>, images/<derm>  the pictures (JPEG)

Modalities: ``clinic`` and ``derm`` images (RGB, resized to ``image_size``, scaled to [-1, 1]) and
``tabular``: one-hot codes of the seven-point criteria (pigment network, streaks, pigmentation,
regression structures, dots and globules, blue-whitish veil, vascular structures) and of elevation,
location and sex; an empty cell is all zeros. Categories come from the whole meta.csv in sorted
order. ``management`` and the seven-point score are left out (they follow from the diagnosis or the
criteria). Labels: the release's five diagnosis groups (Kawahara et al.): BCC, NEV, MEL, MISC, SK.
CMML's exact input encoding is not public (arXiv 2605.25968v1: no code was found, the abstract gives none); this is ours, documented here.
"""

from __future__ import annotations

import csv
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from missbench.core.dataset import ClassificationDataset, Samples
from missbench.core.params import Between

ENV = "MISSBENCH_DERM7PT_ROOT"
CRITERIA = ("pigment_network", "streaks", "pigmentation", "regression_structures", "dots_and_globules",
            "blue_whitish_veil", "vascular_structures")
CLINICAL = ("elevation", "location", "sex")
CLASSES = ("BCC", "NEV", "MEL", "MISC", "SK")
_GROUPS = {
    "basal cell carcinoma": "BCC", "seborrheic keratosis": "SK",
    **dict.fromkeys(("blue nevus", "clark nevus", "combined nevus", "congenital nevus", "dermal nevus",
                     "recurrent nevus", "reed or spitz nevus"), "NEV"),
    **dict.fromkeys(("melanoma", "melanoma (in situ)", "melanoma (less than 0.76 mm)", "melanoma (0.76 to 1.5 mm)",
                     "melanoma (more than 1.5 mm)", "melanoma metastasis"), "MEL"),
    **dict.fromkeys(("dermatofibroma", "lentigo", "melanosis", "miscellaneous", "vascular lesion"), "MISC"),
}
SPLIT_FILES = {"train": "train_indexes.csv", "val": "valid_indexes.csv", "test": "test_indexes.csv"}


class Derm7pt(ClassificationDataset):
    name = "derm7pt"
    modalities = ("clinic", "derm", "tabular")
    n_classes = len(CLASSES)
    description = "Derm7pt release_v0: clinical + dermoscopic images + criteria/metadata table, 5 diagnosis groups; needs root="
    env = ENV
    defaults: ClassVar[dict[str, Any]] = {"root": None, "image_size": 64}
    #: Where the files lie: moving them changes no model or score.
    location_params: ClassVar[tuple[str, ...]] = ("root",)
    constraints: ClassVar[dict[str, Between]] = {"image_size": Between(1, integer=True)}

    @cached_property
    def meta(self) -> list[dict[str, str]]:
        """meta.csv's rows, checked for the columns this loader reads."""
        path = self.root() / "meta" / "meta.csv"
        if not path.exists():
            raise FileNotFoundError(f"dataset 'derm7pt': missing {path}")
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        need = ("diagnosis", "clinic", "derm", *CRITERIA, *CLINICAL)
        missing = [c for c in need if not rows or c not in rows[0]]
        if missing:
            raise ValueError(f"{path}: missing column {missing[0]!r}; expected the release's columns {list(need)}")
        for i, row in enumerate(rows):
            if row["diagnosis"] not in _GROUPS:
                raise ValueError(f"{path}: row {i}: unknown diagnosis {row['diagnosis']!r}")
        return rows

    @cached_property
    def categories(self) -> dict[str, list[str]]:
        return {c: sorted({r[c] for r in self.meta if r[c]}) for c in (*CRITERIA, *CLINICAL)}

    def inputs(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        s = int(self.params["image_size"])
        width = sum(len(v) for v in self.categories.values())
        return {"clinic": ("image", (3, s, s)), "derm": ("image", (3, s, s)), "tabular": ("tabular", (width,))}

    def indexes(self, split: str) -> list[int]:
        path = self.root() / "meta" / SPLIT_FILES[split]
        if not path.exists():
            raise FileNotFoundError(f"dataset 'derm7pt': missing {path}")
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if "indexes" not in (reader.fieldnames or []):
                raise ValueError(f"{path}: expected a column 'indexes' of meta.csv row numbers")
            try:
                out = [int(r["indexes"]) for r in reader]
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
        bad = [i for i in out if not 0 <= i < len(self.meta)]
        if bad:
            raise ValueError(f"{path}: index {bad[0]} is outside meta.csv's {len(self.meta)} rows")
        return out

    def image(self, rel: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        path = self.root() / "images" / rel
        s = int(self.params["image_size"])
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB").resize((s, s), Image.BILINEAR), np.float32)
        except FileNotFoundError:
            raise FileNotFoundError(f"dataset 'derm7pt': missing image {path}") from None
        except (OSError, UnidentifiedImageError) as e:
            raise ValueError(f"{path}: cannot read as an image ({e})") from None
        return arr.transpose(2, 0, 1) / 127.5 - 1.0

    def table(self, row: dict[str, str]) -> np.ndarray:
        return np.concatenate([np.array([row[c] == v for v in values], np.float32) for c, values in self.categories.items()])

    def build(self) -> dict[str, Samples]:
        out = {}
        for split in SPLIT_FILES:
            idx = self.indexes(split)
            rows = [self.meta[i] for i in idx]
            out[split] = Samples(
                ids=[f"derm7pt_{i:04d}" for i in idx],
                x=[np.asarray([self.image(r["clinic"]) for r in rows], np.float32).reshape(len(rows), *self.inputs()["clinic"][1]),
                   np.asarray([self.image(r["derm"]) for r in rows], np.float32).reshape(len(rows), *self.inputs()["derm"][1]),
                   np.asarray([self.table(r) for r in rows], np.float32).reshape(len(rows), -1)],
                y=np.asarray([CLASSES.index(_GROUPS[r["diagnosis"]]) for r in rows], np.int64),
            )
        return out
