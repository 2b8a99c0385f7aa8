"""The `Dataset` contract: cases (modality arrays, target, id), modalities, task and fixed splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass
class Case:
    """One subject: ``image`` is float32 M x D x H x W (data set modality order), ``target`` the label map."""

    case_id: str
    image: np.ndarray
    target: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    info: dict[str, Any] = field(default_factory=dict)


class Dataset:
    """Base class of every data set plugin in ``datasets/``.

    Subclasses set ``name``, ``task``, ``modalities`` and ``defaults`` (parameters as data), and
    implement ``case_ids`` and ``load``. Splits are frozen: the same parameters give the same lists.
    """

    name: ClassVar[str]
    task: ClassVar[str] = "segmentation"
    modalities: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""
    #: Parameters with their defaults; ``__init__`` refuses names not listed here.
    defaults: ClassVar[dict[str, Any]] = {}
    #: Predicted ET components below this many voxels count as empty (BraTS post-processing).
    et_threshold: ClassVar[int] = 500

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"dataset {self.name!r}: unknown parameter {unknown[0]!r}; "
                f"expected one of {sorted(self.defaults)}"
            )
        self.params: dict[str, Any] = {**self.defaults, **params}

    def case_ids(self, split: str) -> list[str]:
        """Case ids of ``split`` ('train', 'val' or 'test'), in a fixed order."""
        raise NotImplementedError

    def load(self, case_id: str) -> Case:
        """Load one case; raises a clear error naming the case and file on bad input."""
        raise NotImplementedError
