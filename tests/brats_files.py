"""Tiny BraTS cases in the official NIfTI layouts (2018-2021 and 2023), for the brats2018 tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (20, 24, 16)  # NIfTI axes x, y, z (BraTS: 240 x 240 x 155)
SPACING = (1.0, 1.2, 1.5)
AFFINE = np.array([[-1.0, 0, 0, 19], [0, -1.2, 0, 27.6], [0, 0, 1.5, -3], [0, 0, 0, 1]])
SUFFIXES = ("flair", "t1", "t1ce", "t2")
#: layout -> (separator, modality suffixes in FLAIR, T1, T1c, T2 order); the label map is ``<case><sep>seg``.
LAYOUTS = {"2018": ("_", SUFFIXES), "2023": ("-", ("t2f", "t1n", "t1c", "t2w"))}


def case_arrays(seed: int, shape: tuple[int, int, int] = SHAPE, et: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(4 x X x Y x Z intensities >= 0, zero outside an ellipsoidal brain; labels {0,1,2,4} inside it)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    brain = (grid[0] / 0.7) ** 2 + (grid[1] / 0.75) ** 2 + (grid[2] / 0.6) ** 2 < 1
    r = np.sqrt(((grid - rng.uniform(-0.15, 0.15, (3, 1, 1, 1))) ** 2).sum(0))
    labels = np.zeros(shape, np.uint8)
    labels[(r < 0.45) & brain] = 2
    labels[r < 0.3] = 1
    if et:
        labels[(r > 0.18) & (r < 0.24)] = 4
    contrast = np.array([[300, 500, 700, 650], [280, 300, 250, 900], [290, 300, 260, 880], [300, 300, 1200, 880]], float)
    image = np.zeros((4, *shape))
    for m in range(4):
        for lab, row in zip((0, 2, 1, 4), contrast):
            image[m][labels == lab] = row[m]
        image[m] += rng.normal(0, 20, shape)
    image = np.where(brain, np.clip(image, 1, None), 0)
    return np.round(image), labels


def write_case(root: Path, case_id: str, grade: str | None = "HGG", seed: int = 0, ext: str = ".nii.gz",
               dtype: type = np.int16, labelled: bool = True, et: bool = True, layout: str = "2018") -> Path:
    """Write one case as ``root/<grade>/<case>/<case>_<modality><ext>`` (layout 2018, also 2019-2021), or
    ``root/<case>/<case>-<t2f|t1n|t1c|t2w|seg><ext>`` with ET written as 3 (layout 2023, ``grade=None``);
    returns the case folder."""
    sep, suffixes = LAYOUTS[layout]
    folder = (root / grade if grade else root) / case_id
    folder.mkdir(parents=True, exist_ok=True)
    image, labels = case_arrays(seed, et=et)
    for suffix, vol in zip(suffixes, image):
        save(folder / f"{case_id}{sep}{suffix}{ext}", vol.astype(dtype))
    if labelled:
        save(folder / f"{case_id}{sep}seg{ext}", np.where(labels == 4, 3, labels).astype(np.uint8) if layout == "2023" else labels)
    return folder


def save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms(SPACING)
    nib.save(img, path)


def write_set(root: Path, val_root: Path | None = None) -> dict[str, list[str]]:
    """Six training cases (HGG and LGG; gzipped and plain; int16 and float32; one LGG without ET)
    and, with ``val_root``, two unlabelled validation cases. Returns the case ids by group."""
    train = [("Brats18_A_1", "HGG", ".nii.gz", np.int16, True), ("Brats18_B_1", "HGG", ".nii", np.float32, True),
             ("Brats18_C_1", "LGG", ".nii.gz", np.float32, False), ("Brats18_D_1", "LGG", ".nii", np.int16, True),
             ("Brats18_E_1", "HGG", ".nii.gz", np.float32, True), ("Brats18_F_1", "LGG", ".nii.gz", np.int16, True)]
    for i, (case, grade, ext, dtype, et) in enumerate(train):
        write_case(root, case, grade, seed=i, ext=ext, dtype=dtype, et=et)
    out = {"train": [c[0] for c in train], "val": []}
    if val_root is not None:
        for i, case in enumerate(["Brats18_V1_1", "Brats18_V2_1"]):
            write_case(val_root, case, None, seed=10 + i, ext=".nii.gz" if i == 0 else ".nii", labelled=False)
        out["val"] = ["Brats18_V1_1", "Brats18_V2_1"]
    return out


def write_lists(folder: Path, train: list[str], val: list[str], test: list[str]) -> Path:
    """RFNet-style lists train1.txt / val1.txt / test1.txt (train with grade prefixes); returns train1.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train1.txt").write_text("".join(f"HGG_{c}\n" for c in train))
    (folder / "val1.txt").write_text("".join(f"{c}\n" for c in val))
    (folder / "test1.txt").write_text("".join(f"{c}\n" for c in test))
    return folder / "train1.txt"
