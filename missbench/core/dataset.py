"""The `Dataset` contract: cases (modality arrays, target, id), modalities, task and fixed splits, and the
optional hooks of ``bench.py prepare`` (a preprocessing cache), ``bench.py export`` (label maps in the
original geometry) and meta.json, each declared here with its default."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from missbench.core.params import Rule, check_params


@dataclass
class Case:
    """One subject: ``image`` is float32 M x D x H x W (data set modality order), ``target`` the label map.

    On classification a case is one sample: ``image`` is the list of per-modality arrays, ``target`` its label.
    """

    case_id: str
    image: np.ndarray
    target: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    info: dict[str, Any] = field(default_factory=dict)


class Dataset:
    """Base class of every data set plugin in ``datasets/``.

    Subclasses set ``name``, ``task``, ``modalities`` and ``defaults`` (parameters as data, with
    ``constraints`` where the type is not enough), and implement ``case_ids`` and ``load``. Splits are
    frozen: the same parameters give the same lists.
    """

    name: ClassVar[str]
    task: ClassVar[str] = "segmentation"
    modalities: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""
    #: Parameters with their defaults; a default's type is the parameter's type.
    defaults: ClassVar[dict[str, Any]] = {}
    #: Allowed values of parameters where the type is not enough (missbench.core.params).
    constraints: ClassVar[dict[str, Rule]] = {}
    #: Parameters that say where the data lies (folders, caches), not what it is: in no identity, so moved data
    #: keeps its models and scores.
    location_params: ClassVar[tuple[str, ...]] = ()
    #: Parameters that change only the evaluation splits, never the training split: not in a model's identity
    #: (missbench.experiment.spec), so scoring more test cases trains nothing. Default: every parameter trains.
    evaluation_params: ClassVar[tuple[str, ...]] = ()
    #: Predicted ET components below this many voxels count as empty (BraTS post-processing).
    et_threshold: ClassVar[int] = 500

    def __init__(self, **params: Any) -> None:
        check_params(f"dataset {self.name!r}", params, self.defaults, self.constraints)
        self.params: dict[str, Any] = {**self.defaults, **params}

    def task_params(self) -> dict[str, Any]:
        """Keyword arguments of `missbench.core.tasks.get_task` for this data set's task (none for segmentation)."""
        return {}

    def case_ids(self, split: str) -> list[str]:
        """Case ids of ``split`` ('train', 'val' or 'test'), in a fixed order."""
        raise NotImplementedError

    def load(self, case_id: str) -> Case:
        """Load one case; raises a clear error naming the case and file on bad input."""
        raise NotImplementedError

    def fingerprint(self, case_id: str) -> str:
        """A SHA-256 of one case's content (its image arrays as `load` gives them), to find one subject under
        another id in another data set: a score on another data set refuses the model's training cases."""
        case = self.load(case_id)
        digest = hashlib.sha256()
        for array in case.image if isinstance(case.image, list) else [case.image]:
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    # --- optional hook: bench.py prepare (missbench/realdata/prepare.py) ----------------------

    #: Data sets with a preprocessing cache set its folder and the recipe that fills it.
    cache_folder: Path | None = None
    recipe: dict[str, Any] | None = None

    @classmethod
    def for_prepare(cls, **params: Any) -> "Dataset | None":
        """An instance for ``bench.py prepare`` that does not yet require its cache; None: nothing to prepare (default)."""
        return None

    def prepare_ids(self) -> list[str]:
        """The cases ``prepare`` fills."""
        return []

    def is_prepared(self, case_id: str, verify: bool = False) -> bool:
        """Whether the case is in the cache, made from the same recipe and source files (by content); ``verify``
        rehashes everything instead of trusting unchanged file sizes and times (``bench.py prepare --verify``)."""
        return True

    def check_headers(self, case_id: str) -> None:
        """Cheap checks of a case's files before anything is written; a clear error naming the file."""

    def prepare_case(self, case_id: str) -> None:
        """Preprocess one case into the cache, atomically."""
        raise NotImplementedError(f"dataset {self.name!r} has nothing to prepare")

    # --- optional hook: bench.py export (missbench/realdata/export.py) ------------------------

    def write_label_map(self, case: Case, labels: np.ndarray, path: Path) -> None:
        """Write a predicted label map of ``case`` to ``path`` in the data's original geometry."""
        raise NotImplementedError(f"dataset {self.name!r} cannot write label maps")

    @classmethod
    def can_export(cls) -> bool:
        """Whether the data set implements `write_label_map`."""
        return cls.write_label_map is not Dataset.write_label_map

    # --- optional hook: case attributes (missing-not-at-random masks, missbench/core/availability.py) ----

    #: The case attributes a data set offers besides `TUMOUR_VOLUME` (name: what it is, one line), for a protocol's
    #: ``missing: {scheme: mnar, attribute: <name>}``; `case_attribute` gives their values.
    attributes: ClassVar[dict[str, str]] = {}

    @classmethod
    def attribute_names(cls) -> dict[str, str]:
        """Every case attribute the data set offers: on segmentation the whole tumour's volume, then its own."""
        return ({TUMOUR_VOLUME: TUMOUR_VOLUME_TEXT} if cls.task == "segmentation" else {}) | dict(cls.attributes)

    def case_attribute(self, split: str, name: str) -> np.ndarray:
        """One number per case of ``split`` (`case_ids` order) for the attribute ``name``; the base class computes
        `TUMOUR_VOLUME` from the labels (a subclass handles its own names and leaves the rest to this one)."""
        if name == TUMOUR_VOLUME and self.task == "segmentation":
            return np.array([tumour_volume(self.load(c)) for c in self.case_ids(split)], float)
        raise KeyError(f"dataset {self.name!r} has no case attribute {name!r}; it offers {sorted(self.attribute_names())}")

    # --- optional hook: meta.json ----------------------------------------------------------------

    def run_meta(self) -> dict[str, Any]:
        """What a run's meta.json records about the data besides its parameters (e.g. the cache recipe)."""
        return {}


SPLITS = ("train", "val", "test")
#: The case attribute every segmentation data set offers.
TUMOUR_VOLUME = "tumour_volume"
TUMOUR_VOLUME_TEXT = "the whole tumour's volume (labels 1, 2 and 4) in mm^3, from the case's labels"


def tumour_volume(case: Case) -> float:
    """A segmentation case's whole-tumour volume in mm^3: its voxels with a label > 0 times the voxel volume."""
    if case.target is None:
        raise ValueError(f"case {case.case_id} has no labels: its tumour volume is unknown")
    return float(np.count_nonzero(case.target)) * float(np.prod(case.spacing))


def attribute_values(dataset: Dataset, split: str, name: str) -> np.ndarray:
    """`Dataset.case_attribute`, checked: one finite number per case of ``split``."""
    values = np.asarray(dataset.case_attribute(split, name), dtype=float)
    n = len(dataset.case_ids(split))
    if values.shape != (n,) or not np.isfinite(values).all():
        raise ValueError(f"dataset {dataset.name!r}: case attribute {name!r} of split {split!r} must be {n} finite numbers, "
                         f"got shape {values.shape}")
    return values


#: The tasks a data set may declare.
TASKS = ("segmentation", "classification")


def declaration_problem(cls: type) -> str | None:
    """What is wrong with a data set class's declaration, in one line (None: nothing): a name, a known task,
    modalities as a non-empty tuple of names, parameters as a mapping, and the two required hooks."""
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        return "no `name` (the name --dataset uses)"
    if cls.task not in TASKS:
        return f"task {cls.task!r}: expected one of {list(TASKS)}"
    modalities = getattr(cls, "modalities", None)
    if not isinstance(modalities, tuple | list) or not modalities or not all(isinstance(m, str) for m in modalities):
        return f"modalities {modalities!r}: expected a non-empty tuple of names"
    if not isinstance(cls.defaults, dict) or not isinstance(cls.constraints, dict):
        return "defaults and constraints must be mappings of parameter name to value and to rule"
    if not isinstance(cls.attributes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in cls.attributes.items()):
        return "attributes must map each case attribute's name to what it is (one line)"
    missing = [hook for hook in ("case_ids", "load") if getattr(cls, hook) is getattr(Dataset, hook)]
    if cls.task == "classification":
        missing = [hook for hook in ("inputs", "build") if getattr(cls, hook) is getattr(ClassificationDataset, hook)]
    if missing:
        return f"does not implement {' and '.join(missing)}"
    return None


@dataclass
class Samples:
    """A classification split in bulk: per-modality float32 arrays (N x shape, data set order), labels, ids."""

    ids: list[str]
    x: list[np.ndarray]
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class ClassificationDataset(Dataset):
    """Base class of classification data sets: samples come in bulk per split (`samples`).

    Subclasses set ``n_classes`` and implement ``inputs`` (kind and shape per modality, in
    ``modalities`` order) and ``build`` (the three splits); the result is checked and cached.
    """

    task: ClassVar[str] = "classification"
    n_classes: ClassVar[int]
    #: For data sets read from disk: the environment variable that may give the ``root`` parameter.
    env: ClassVar[str] = ""

    def root(self) -> Path:
        """The data folder: the ``root`` parameter, else the environment variable ``env``; clear errors otherwise."""
        root = self.params.get("root") or (os.environ.get(self.env) if self.env else None)
        if not root:
            raise ValueError(f"dataset {self.name!r}: no data folder; pass --dataset-param root=PATH or set {self.env}")
        if not Path(root).is_dir():
            raise ValueError(f"dataset {self.name!r}: root {root} is not a folder")
        return Path(root)

    def inputs(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """(kind, shape) of each modality, in modality order; kind is image, spectrogram or tabular."""
        raise NotImplementedError

    def build(self) -> dict[str, Samples]:
        """The 'train', 'val' and 'test' splits; raises a clear error naming the file on bad input."""
        raise NotImplementedError

    def task_params(self) -> dict[str, Any]:
        if self.env:  # read from disk: refuse a missing data folder before a run writes anything
            self.root()
        return {"n_classes": self.n_classes, "inputs": self.inputs()}

    def samples(self, split: str) -> Samples:
        """The samples of ``split`` ('train', 'val' or 'test'), built once per instance and checked."""
        if split not in SPLITS:
            raise ValueError(f"dataset {self.name!r}: unknown split {split!r}; expected one of {list(SPLITS)}")
        if not hasattr(self, "_splits"):
            splits = self.build()
            for name in SPLITS:
                self._check(name, splits[name])
            ids = [i for name in SPLITS for i in splits[name].ids]
            if len(set(ids)) != len(ids):
                raise ValueError(f"dataset {self.name!r}: a sample id occurs twice across splits")
            self._splits = splits
        return self._splits[split]

    def _check(self, split: str, s: Samples) -> None:
        where = f"dataset {self.name!r}, split {split!r}"
        if len(s.x) != len(self.modalities):
            raise ValueError(f"{where}: {len(s.x)} modality arrays; expected {len(self.modalities)} ({list(self.modalities)})")
        for (name, (_, shape)), arr in zip(self.inputs().items(), s.x):
            if arr.shape != (len(s), *shape):
                raise ValueError(f"{where}: modality {name!r} has shape {arr.shape}; expected {(len(s), *shape)}")
            if not np.isfinite(arr).all():
                raise ValueError(f"{where}: modality {name!r} holds NaN or infinite values")
        if s.y.shape != (len(s),) or len(s) and not (0 <= s.y.min() and s.y.max() < self.n_classes):
            raise ValueError(f"{where}: labels must be {len(s)} integers in 0..{self.n_classes - 1}")

    def case_ids(self, split: str) -> list[str]:
        return list(self.samples(split).ids)

    def load(self, case_id: str) -> Case:
        for split in SPLITS:
            s = self.samples(split)
            if case_id in s.ids:
                i = s.ids.index(case_id)
                return Case(case_id, [a[i] for a in s.x], np.int64(s.y[i]))
        raise KeyError(f"dataset {self.name!r}: no sample {case_id!r}")
