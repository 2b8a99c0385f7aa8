"""Image + tabular classification, SYNTHETIC: the offline stand-in for imaging-plus-clinical-table data
(Derm7pt, CMML's first data set; datasets/derm7pt.py reads the real one).

Each sample has a real handwritten digit image (scikit-learn's ``load_digits``, upsampled to 28x28
and noised, scaled to [-1, 1]) and a tabular row of 12 features. The label (4 classes) needs both:

    label = 2 * [digit >= 5] + [z > 0]

where z ~ N(0, 1) is a latent "clinical" factor. The table holds 4 noisy copies of z (so it
tells [z > 0] well), 4 features weakly related to [digit >= 5] (as clinical metadata hints at
what the image shows), and 4 pure-noise features. So the image alone can reach about half the
labels, the table alone somewhat more, and the pair most of them; chance is 25%.
Splits: ``n_train`` / ``n_val`` / ``n_test`` samples with distinct images (600 / 100 / 300).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar

import numpy as np

from missbench.core.dataset import ClassificationDataset, Samples
from missbench.core.params import Between

N_FEATURES = 12


@lru_cache(maxsize=4)
def _build(seed: int, n_train: int, n_val: int, n_test: int, image_noise: float, table_noise: float) -> dict[str, Samples]:
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    digits = load_digits()
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    if sum(sizes.values()) > len(digits.target):
        raise ValueError(f"dataset 'imgtab_synthetic': n_train + n_val + n_test = {sum(sizes.values())} exceeds the "
                         f"{len(digits.target)} images of load_digits")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    out, start = {}, 0
    for split, n in sizes.items():
        idx = order[start:start + n]
        start += n
        group = (digits.target[idx] >= 5).astype(np.int64)
        z = rng.standard_normal(n)
        images = np.stack([zoom(digits.images[i] / 16.0, 28 / 8, order=1) for i in idx])
        images = np.clip(images + rng.normal(0, image_noise, images.shape), 0, 1) * 2 - 1
        table = np.concatenate([
            z[:, None] + rng.normal(0, table_noise, (n, 4)),
            0.25 * (2 * group[:, None] - 1) + rng.normal(0, 1.0, (n, 4)),
            rng.standard_normal((n, 4)),
        ], 1)
        out[split] = Samples(ids=[f"it_{split}{k:04d}" for k in range(n)],
                             x=[images[:, None].astype(np.float32), table.astype(np.float32)],
                             y=2 * group + (z > 0))
    return out


class ImgTabSynthetic(ClassificationDataset):
    name = "imgtab_synthetic"
    modalities = ("image", "tabular")
    n_classes = 4
    description = "SYNTHETIC image (load_digits, 28x28) + 12-feature table; the 4-class label needs both"
    defaults: ClassVar[dict[str, Any]] = {"seed": 0, "n_train": 600, "n_val": 100, "n_test": 300, "image_noise": 0.35, "table_noise": 0.6}
    constraints: ClassVar[dict[str, Between]] = {
        "seed": Between(0, integer=True), "n_train": Between(1, integer=True), "n_val": Between(0, integer=True),
        "n_test": Between(1, integer=True), "image_noise": Between(0), "table_noise": Between(0)}

    def inputs(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        return {"image": ("image", (1, 28, 28)), "tabular": ("tabular", (N_FEATURES,))}

    def build(self) -> dict[str, Samples]:
        p = self.params
        return _build(int(p["seed"]), int(p["n_train"]), int(p["n_val"]), int(p["n_test"]), float(p["image_noise"]), float(p["table_noise"]))
