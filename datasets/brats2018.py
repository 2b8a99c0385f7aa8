"""Real BraTS (2018 to 2021, and 2023 adult glioma) from the official NIfTI files, preprocessed once into a
memory-mapped cache.

Layouts read (``root``, the training folder), told apart by their file names (`scan`):
- ``2018-2021``: ``<root>/{HGG,LGG}/<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz`` (or ``.nii``): BraTS 2018
  and 2019 (other case names); BraTS 2020 and 2021 have the same files without the HGG/LGG level,
  ``<root>/<case>/...`` (2021: ``BraTS2021_00000/BraTS2021_00000_flair.nii.gz``). Labels {0,1,2,4}
  (1 NCR, 2 ED, 4 ET), as read. Sources: Baid et al., "The RSNA-ASNR-MICCAI BraTS 2021 Benchmark on Brain
  Tumor Segmentation and Radiogenomic Classification", arXiv:2107.02314 (labels); the public BraTS 2021
  loaders of nnU-Net (MIC-DKFZ/nnUNet, ``nnunetv2/dataset_conversion/Dataset137_BraTS21.py``: reads
  ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``, refuses labels outside {0,1,2,4}) and MONAI
  (Project-MONAI/research-contributions, ``SwinUNETR/BRATS21/README.md``:
  ``TrainingData/BraTS2021_01146/BraTS2021_01146_flair.nii.gz``; "1 for NCR, 2 for ED, 4 for ET").
- ``2023`` (BraTS 2023 adult glioma, BraTS-GLI): ``<root>/<case>/<case>-{t2f,t1n,t1c,t2w,seg}.nii.gz``
  (``BraTS-GLI-00000-000/BraTS-GLI-00000-000-t2f.nii.gz``), t2f = FLAIR, t1n = native T1, t1c =
  post-contrast T1, t2w = T2. Labels {0,1,2,3} (1 NCR, 2 ED, 3 ET): the official BraTS 2023 metrics
  (rachitsaluja/BraTS-2023-Metrics, ``eval.py``, ``get_TissueWiseSeg``) score WT = {1,2,3}, TC = {1,3},
  ET = {3}. **Label 3 is read as the harness's 4** (regions WT={1,2,4}, TC={1,4}, ET={4} throughout), and
  `Brats2018.write_label_map` writes 4 back as 3, so exported maps are in the 2023 convention. A 2023 file
  holding a 4 is refused (2023 has none; in BraTS 2024's post-treatment glioma data, which are named the
  same way, 4 is the resection cavity: nnU-Net's ``Dataset226_BraTS2024-BraTS-GLI.py``). Modality names:
  BrainLesion/BraTS ``docs/glossary.md`` (the BraTS organisers' orchestrator) and nnU-Net's converter
  above; case ids ``\\d{5}-\\d{3}`` and ``<case>-seg.nii.gz`` label files: the 2023 portal's validation
  script (Sage-Bionetworks-Challenges/brats2023, ``evaluation/lesionwise/validate.py``). Data: Synapse
  syn51156910.
The validation folder (``val_root``) holds the same files without the label map, in the training
folder's layout. Case ids are the case folder names. The layout is detected, not a parameter (a new
parameter would change the run id of every existing brats2018 run): a case folder holding files of
both layouts, or a folder whose cases mix them or hold neither, is refused with the folder named. The
cache records the layout: in every case's meta.json, and in the recipe of the 2023 layout (read with
another label map, so never sharing cache entries with the others; 2018 to 2021 are read alike and
share the recipe they always had).

Splits: BraTS 2021 and 2023 have no published split lists here. Give your own as
``split=<folder holding train.txt, val.txt and test.txt>`` or ``split=<train{k}.txt>`` (``val{k}.txt`` and
``test{k}.txt`` beside it), one case folder name per line (missbench/realdata/splits.py), or ``split=all``.

Two published BraTS 2018 protocols are selected by the ``split`` parameter:
- A (U-HVED, RFNet and the methods built on RFNet's code): ``split=uhved1``, ``uhved2`` or ``uhved3``, U-HVED's
  splits shipped with the project (missbench/realdata/brats2018_splits/, from github.com/ReubenDo/U-HVED,
  MIT), or a split file by path: a ``dataset_split_k.csv`` (with ``corresponding_naming.csv`` beside it) or
  RFNet-style ``train{k}.txt``/``val``/``test`` lists (missbench/realdata/splits.py); 199 / 29 / 57 cases,
  scored locally on the test list.
- B (ShaSpec, MoMKE, SimMLM): ``split=all``: every training case trains, nothing is scored
  locally, and ``bench.py export`` writes label maps of the ``val_root`` cases for the BraTS portal.

Pre-processing recipes (``recipe``), run once by ``bench.py prepare`` (missbench/realdata/prepare.py):
- ``rfnet`` (default; RFNet ``preprocess.py``): crop all modalities to the box of non-zero voxels of
  their channel-wise maximum, each axis shorter than ``crop`` (128) grown symmetrically to at least
  that size (RFNet's ``sup_128``, including its exclusive upper bound on axes it does not grow);
  z-score each modality with the mean and std over brain voxels (sum over modalities > 0), applied
  to the whole crop (so the background becomes a constant).
- ``shaspec`` (ShaSpec ``BraTSDataSet.truncate``): per modality, clip at the index of the last
  histogram bin (``int(max)`` bins) holding >= 50 voxels, then z-score over the voxels that differ
  from the corner voxel, background 0. No crop by default (``crop=0``), as ShaSpec.
Volumes are stored float32 (M x D x H x W, D = the NIfTI's third axis, H and W its first and second,
as ShaSpec's ``transpose((0, 3, 1, 2))``) and labels uint8 {0,1,2,4} (a 2023 file's 3 stored as 4), with the
crop box and the original shape, affine and header, so predictions can be pasted back into the original grid.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from missbench.realdata import cache
from missbench.core.dataset import Case, Dataset
from missbench.core.params import Between, OneOf, Rule
from missbench.realdata.splits import SplitError, read_split
from missbench.store.run_folder import write_atomic

if TYPE_CHECKING:  # nibabel reads and writes NIfTI only: a host that trains from the prepared cache needs none,
    import nibabel as nib  # and listing plugins does not pay for it

MODALITIES = ("FLAIR", "T1", "T1c", "T2")
#: File suffix of each modality (and of the label map) in the 2018-2021 layout.
SUFFIX = {"FLAIR": "flair", "T1": "t1", "T1c": "t1ce", "T2": "t2", "seg": "seg"}
#: The harness's labels (missbench/core/regions.py); a layout's files may hold others (`Layout`).
LABELS = (0, 1, 2, 4)
EXTENSIONS = (".nii.gz", ".nii")
ENV_ROOT, ENV_VAL, ENV_CACHE = "MISSBENCH_BRATS2018", "MISSBENCH_BRATS2018_VAL", "MISSBENCH_CACHE"
#: Recipe name -> default ``crop`` (minimum crop size per axis; 0 = no crop).
RECIPES = {"rfnet": 128, "shaspec": 0}
#: Voxels a histogram bin needs to set ShaSpec's clip maximum.
SHASPEC_BIN_COUNT = 50
#: Bump when the cached arrays change for the same recipe, so old caches are not reused.
CACHE_VERSION = 1


class BratsDataError(ValueError):
    """Bad BraTS input: the message names the case and the file."""


@dataclass(frozen=True)
class Layout:
    """A naming convention of the BraTS files: ``<case><sep><suffix>.nii.gz`` per modality and ``seg``, and the
    label values its label maps hold, with those that differ from the harness's (``to_harness``)."""

    name: str
    sep: str
    suffix: dict[str, str]
    labels: tuple[int, ...]
    to_harness: dict[int, int]
    years: str

    def stem(self, case_id: str, key: str) -> str:
        return f"{case_id}{self.sep}{self.suffix[key]}"

    def read_labels(self, data: np.ndarray) -> np.ndarray:
        """A label map of this layout's (checked) values in the harness's labels, uint8."""
        out = data.astype(np.uint8)
        for src, dst in self.to_harness.items():
            out[data == src] = dst
        return out

    def write_labels(self, labels: np.ndarray) -> np.ndarray:
        """A label map in the harness's labels back in this layout's values, uint8."""
        out = labels.astype(np.uint8)
        for src, dst in self.to_harness.items():
            out[labels == dst] = src
        return out


#: The layouts, told apart by their file names (no file name is in both).
LAYOUTS = {
    "2018-2021": Layout("2018-2021", "_", SUFFIX, LABELS, {}, "BraTS 2018-2021"),
    "2023": Layout("2023", "-", {"FLAIR": "t2f", "T1": "t1n", "T1c": "t1c", "T2": "t2w", "seg": "seg"}, (0, 1, 2, 3), {3: 4},
                   "BraTS 2023"),
}
#: The layout of caches written before layouts were recorded.
CLASSIC = "2018-2021"


@dataclass(frozen=True)
class CaseFiles:
    """Where one case's files are: modality (and ``seg``) -> path; ``grade`` HGG, LGG or None; ``layout`` a
    key of `LAYOUTS`."""

    case_id: str
    grade: str | None
    folder: Path
    files: dict[str, Path]
    labelled: bool
    layout: str = CLASSIC


def _case_files(folder: Path, grade: str | None, labelled: bool, layout: str = CLASSIC) -> tuple[CaseFiles, list[str]]:
    """The files of the case in ``folder`` and the problems found (missing or empty files)."""
    problems, files = [], {}
    for key in (*MODALITIES, "seg") if labelled else MODALITIES:
        stem = LAYOUTS[layout].stem(folder.name, key)
        found = [folder / f"{stem}{ext}" for ext in EXTENSIONS if (folder / f"{stem}{ext}").is_file()]
        if not found:
            what = "label map (training cases need one)" if key == "seg" else f"{key} file"
            problems.append(f"case {folder.name}: missing {what} {folder / stem}.nii.gz (or .nii)")
        elif found[0].stat().st_size == 0:
            problems.append(f"case {folder.name}: empty file {found[0]}")
        else:
            files[key] = found[0]
    return CaseFiles(folder.name, grade, folder, files, labelled, layout), problems


def folder_layouts(folder: Path) -> list[str]:
    """The layouts whose file names (any modality or ``seg``) the case folder ``folder`` holds."""
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError:
        return []
    return [name for name, layout in LAYOUTS.items()
            if any(layout.stem(folder.name, key) + ext in names for key in layout.suffix for ext in EXTENSIONS)]


def _example(layout: str) -> str:
    return f"<case>/{LAYOUTS[layout].stem('<case>', 'FLAIR')}.nii.gz"


def scan(root: Path, labelled: bool) -> tuple[dict[str, CaseFiles], dict[str, list[str]]]:
    """Case folders under ``root`` (``HGG``/``LGG`` level or flat) and the problems per case id.

    The layout is the one whose file names the case folders hold: one folder holding both, folders that
    disagree, or no folder holding either is refused naming the folder. A folder holding neither, beside
    others that agree, is a case of their layout whose files are missing (a problem, as a missing file)."""
    if not root.is_dir():
        raise BratsDataError(f"BraTS folder not found: {root}")
    graded = [root / g for g in ("HGG", "LGG") if (root / g).is_dir()]
    parents = [(g, g.name) for g in graded] if graded else [(root, None)]
    folders: list[tuple[Path, str | None]] = []
    seen: dict[str, Path] = {}
    first: dict[str, Path] = {}  # layout -> the first case folder holding its names
    for parent, grade in parents:
        for folder in sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if folder.name in seen:
                raise BratsDataError(f"case {folder.name} is in two folders: {seen[folder.name]} and {folder}")
            seen[folder.name] = folder
            folders.append((folder, grade))
            found = folder_layouts(folder)
            if len(found) > 1:
                both = " and ".join(_example(n) for n in found)
                raise BratsDataError(f"case folder {folder} holds files of two layouts ({both}); keep one")
            for name in found:
                first.setdefault(name, folder)
    if not folders:
        raise BratsDataError(f"no case folders under {root} (expected HGG/<case>/<case>_flair.nii.gz, ... or "
                             f"<case>/<case>_flair.nii.gz or <case>/<case>-t2f.nii.gz)")
    if len(first) > 1:
        a, b = sorted(first)
        raise BratsDataError(f"{root} mixes layouts: {first[a]} holds {LAYOUTS[a].years} names ({_example(a)}) and {first[b]} "
                             f"holds {LAYOUTS[b].years} names ({_example(b)}); give a folder of one layout")
    if not first:
        raise BratsDataError(f"no BraTS files in the case folders under {root} (first: {folders[0][0]}); expected "
                             + " or ".join(f"{_example(n)} ({LAYOUTS[n].years})" for n in LAYOUTS))
    (layout,) = first
    cases, problems = {}, {}
    for folder, grade in folders:
        cases[folder.name], found = _case_files(folder, grade, labelled, layout)
        if found:
            problems[folder.name] = found
    return cases, problems


def layout_of(cases: dict[str, CaseFiles]) -> str:
    """The layout `scan` found for ``cases`` (one per folder)."""
    return next(iter(cases.values())).layout


def _load_header(case: CaseFiles, key: str) -> nib.Nifti1Image:
    import nibabel as nib

    path = case.files[key]
    try:
        img = nib.load(path)
    except Exception as e:  # nibabel raises several types for a corrupt file
        raise BratsDataError(f"case {case.case_id}: cannot read {path}: {type(e).__name__}: {e}") from None
    if len(img.shape) != 3:
        raise BratsDataError(f"case {case.case_id}: {path} has shape {img.shape}; expected a 3-D volume")
    return img


def check_geometry(case: CaseFiles) -> dict[str, nib.Nifti1Image]:
    """Read every header of a case; refuse shapes or affines that disagree between its files."""
    imgs = {key: _load_header(case, key) for key in case.files}
    ref_key = MODALITIES[0]
    ref = imgs[ref_key]
    for key, img in imgs.items():
        if img.shape != ref.shape:
            raise BratsDataError(f"case {case.case_id}: {case.files[key]} has shape {img.shape} but {case.files[ref_key].name} has {ref.shape}")
        if not np.allclose(img.affine, ref.affine, atol=1e-3):
            raise BratsDataError(f"case {case.case_id}: the affine of {case.files[key]} differs from that of {case.files[ref_key].name}:\n"
                                 f"{np.round(img.affine, 4)}\nvs\n{np.round(ref.affine, 4)}")
    return imgs


def _read_data(case: CaseFiles, key: str, img: nib.Nifti1Image) -> np.ndarray:
    path = case.files[key]
    try:
        data = np.asarray(img.dataobj) if key == "seg" else img.get_fdata(dtype=np.float32)
    except Exception as e:
        raise BratsDataError(f"case {case.case_id}: cannot read the voxels of {path}: {type(e).__name__}: {e}") from None
    if not np.isfinite(data).all():
        raise BratsDataError(f"case {case.case_id}: {path} holds NaN or infinite voxels")
    if key == "seg":
        layout = LAYOUTS[case.layout]
        values = np.unique(data)
        bad = [v for v in values.tolist() if v not in layout.labels]
        if bad:
            allowed = ", ".join(map(str, layout.labels))
            note = f" ({layout.years} labels: 3 is the enhancing tumour, there is no 4)" if layout.to_harness else ""
            raise BratsDataError(f"case {case.case_id}: {path} holds labels {bad[:5]} outside {{{allowed}}}{note}")
        return layout.read_labels(data)
    return data


def rfnet_box(volume: np.ndarray, min_size: int) -> list[tuple[int, int]]:
    """RFNet's crop: non-zero box of the channel-wise max (M x X x Y x Z), axes grown to >= ``min_size``.

    As RFNet's ``sup_128``: the box's upper index is the last non-zero voxel, used as an exclusive
    bound; a short axis grows by ``(min_size - extent) // 2`` on each side plus one, shifted to
    start at 0 if it would begin before it. Bounds are clipped to the volume (numpy slicing)."""
    nz = np.nonzero(volume.max(0))
    box = []
    for axis, size in zip(nz, volume.shape[1:]):
        lo, hi = int(axis.min()), int(axis.max())
        if hi - lo < min_size:
            grow = (min_size - (hi - lo)) // 2
            lo, hi = lo - grow, hi + grow + 1
        if lo < 0:
            lo, hi = 0, hi - lo
        box.append((lo, min(hi, size)))
    return box


def rfnet_normalise(volume: np.ndarray, case_id: str, files: dict[str, Path]) -> np.ndarray:
    """Z-score each modality with mean and std over brain voxels (sum over modalities > 0), whole crop."""
    mask = volume.sum(0) > 0
    out = np.empty_like(volume)
    for m, x in enumerate(volume):
        y = x[mask]
        std = y.std() if y.size else 0.0
        if std == 0:
            raise BratsDataError(f"case {case_id}: {files[MODALITIES[m]]} is constant inside the brain; cannot z-score it")
        out[m] = (x - y.mean()) / std
    return out


def shaspec_normalise(volume: np.ndarray, case_id: str, files: dict[str, Path]) -> np.ndarray:
    """ShaSpec's ``truncate`` per modality: histogram clip, then z-score over non-background voxels.

    As the code: the clip value is the *index* of the last bin with >= 50 voxels (equal to the
    intensity when the minimum is 0 and bins are ~1 wide); background is the corner voxel's value;
    the std is taken over the voxels that differ from that value after centring."""
    out = np.empty_like(volume)
    for m, x in enumerate(volume):
        x = x.copy()
        hist, _ = np.histogram(x, bins=max(int(x.max()), 1))
        full = np.flatnonzero(hist >= SHASPEC_BIN_COUNT)
        if len(full):
            x = np.minimum(x, np.float32(full[-1]))
        corner = x[0, 0, 0]
        fg = x != corner
        if not fg.any():
            raise BratsDataError(f"case {case_id}: {files[MODALITIES[m]]} is constant; cannot z-score it")
        x = np.where(fg, x - x[fg].mean(), 0).astype(np.float32)
        fg = x != corner
        std = x[fg].std() if fg.any() else 0.0
        if std == 0:
            raise BratsDataError(f"case {case_id}: {files[MODALITIES[m]]} is constant inside the brain; cannot z-score it")
        out[m] = np.where(fg, x / std, 0)
    return out


class Brats2018(Dataset):
    """BraTS 2018 to 2021 and 2023 adult glioma (FLAIR, T1, T1c, T2) from the official NIfTI layouts (detected from
    the file names), via a preprocessed cache. The name stays ``brats2018``: protocols and reports refer to it."""

    name: ClassVar[str] = "brats2018"
    task: ClassVar[str] = "segmentation"
    modalities: ClassVar[tuple[str, ...]] = MODALITIES
    description: ClassVar[str] = (
        "Real BraTS NIfTI: 2018-2021 (<case>_flair.nii.gz) or 2023 glioma (<case>-t2f.nii.gz) layout, detected "
        "(root= or $MISSBENCH_BRATS2018); split=uhved1|uhved2|uhved3 (shipped) or <U-HVED csv | RFNet txt | folder of lists> (protocol A) "
        "or split=all (protocol B); run `bench.py prepare` first."
    )
    defaults: ClassVar[dict[str, Any]] = {
        "root": None, "val_root": None, "split": None, "recipe": "rfnet", "crop": None, "cache": None,
    }
    #: Where the files and the cache lie: moving them changes no model or score (the cache's recipe and the split are
    #: in the identities; a case's content is checked against the cache by `bench.py prepare`).
    location_params: ClassVar[tuple[str, ...]] = ("root", "val_root", "cache")
    #: ``crop``: the minimum crop size per axis (0: no crop; null: the recipe's default).
    constraints: ClassVar[dict[str, Rule]] = {"recipe": OneOf(*RECIPES), "crop": Between(0, integer=True)}
    et_threshold: ClassVar[int] = 500

    def __init__(self, **params: Any) -> None:
        self._setup(params)
        missing = [c for c in self._used() if not self.is_prepared(c)]
        if missing:
            raise BratsDataError(
                f"dataset {self.name!r}: {len(missing)} of {len(self._used())} cases are not in the cache {self.cache_folder}, or were "
                f"cached from other files (first: {missing[0]}); run `python bench.py prepare --dataset {self.name}` with the same "
                f"--dataset-param options (or --protocol and --budget)")

    @classmethod
    def for_prepare(cls, **params: Any) -> "Brats2018":
        """An instance that checks the layout and split but not the cache (what `prepare` fills)."""
        obj = cls.__new__(cls)
        obj._setup(params, need_split=False)
        return obj

    # --- set-up: parameters, layout, split -------------------------------------------------------

    def _setup(self, params: dict[str, Any], need_split: bool = True) -> None:
        super().__init__(**params)
        p = self.params
        root = p["root"] or os.environ.get(ENV_ROOT)
        if not root:
            raise BratsDataError(f"dataset {self.name!r}: no data folder; pass --data-root DIR (or --dataset-param root=DIR) "
                                 f"or set ${ENV_ROOT} to the training folder (holding HGG/ and LGG/, or the case folders)")
        self.root = Path(root).expanduser()
        val_root = p["val_root"] or os.environ.get(ENV_VAL)
        self.val_root = Path(val_root).expanduser() if val_root else None
        self.cases, problems = scan(self.root, labelled=True)
        self.layout = layout_of(self.cases)
        self.val_cases: dict[str, CaseFiles] = {}
        if self.val_root is not None:
            self.val_cases, val_problems = scan(self.val_root, labelled=False)
            problems |= val_problems
            if layout_of(self.val_cases) != self.layout:
                raise BratsDataError(f"{self.val_root} holds {LAYOUTS[layout_of(self.val_cases)].years} files but {self.root} "
                                     f"{LAYOUTS[self.layout].years} files; give validation cases of the training folder's layout")
            both = sorted(set(self.cases) & set(self.val_cases))
            if both:
                raise BratsDataError(f"case {both[0]} is both in {self.root} and in {self.val_root}")
        crop = RECIPES[p["recipe"]] if p["crop"] is None else p["crop"]
        self.recipe = {"name": p["recipe"], "crop": crop, "version": CACHE_VERSION}
        if self.layout != CLASSIC:  # read with another label map: its own cache (2018-2021 keep the recipe they always had)
            self.recipe["layout"] = self.layout
        base = p["cache"] or os.environ.get(ENV_CACHE) or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "missbench"
        self.cache_folder = cache.cache_folder(Path(base).expanduser(), self.name, self.recipe)
        self.lists = self._split_lists(need_split)
        bad = [msg for c in self._used() for msg in problems.get(c, [])]
        if bad:
            more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
            raise BratsDataError("; ".join(bad[:5]) + more)

    def _split_lists(self, need_split: bool) -> dict[str, list[str]]:
        split = self.params["split"]
        every = sorted(self.cases)
        export = sorted(self.val_cases)
        if split is None and need_split:
            raise BratsDataError(f"dataset {self.name!r}: give split=uhved1|uhved2|uhved3 (shipped) or "
                                 f"<dataset_split_k.csv | train_k.txt | folder of lists> "
                                 f"(protocol A) or split=all (protocol B: train on every case, export the validation folder)")
        if split is None or split == "all":
            return {"train": every, "val": [], "test": [], "export": export}
        try:
            lists = read_split(split)
        except SplitError as e:
            raise BratsDataError(f"dataset {self.name!r}: split: {e}") from None
        absent = [c for s in ("train", "val", "test") for c in lists.cases(s) if c not in self.cases]
        if absent:
            raise BratsDataError(f"split file {lists.source} names {len(absent)} cases not in {self.root} "
                                 f"(first: {', '.join(absent[:3])})")
        return {s: lists.cases(s) for s in ("train", "val", "test")} | {"export": export or lists.cases("test")}

    def _used(self) -> list[str]:
        return list(dict.fromkeys(c for ids in self.lists.values() for c in ids))

    def _files(self, case_id: str) -> CaseFiles:
        found = self.cases.get(case_id) or self.val_cases.get(case_id)
        if found is None:
            raise KeyError(f"dataset {self.name!r}: unknown case {case_id!r} (not in {self.root}"
                           f"{' or ' + str(self.val_root) if self.val_root else ''})")
        return found

    # --- the Dataset contract --------------------------------------------------------------------

    def case_ids(self, split: str) -> list[str]:
        """'train', 'val', 'test' (the split's lists; empty val/test with split=all) or 'export'
        (the validation folder's cases, else the test list): the cases `bench.py export` writes."""
        if split not in self.lists:
            raise ValueError(f"dataset {self.name!r}: unknown split {split!r}; expected one of {list(self.lists)}")
        return list(self.lists[split])

    def load(self, case_id: str) -> Case:
        """The cached case, memory-mapped copy-on-write: pages are read on use, and writes by a caller
        stay private (never reach the cache). ``target`` is None for unlabelled validation cases."""
        files = self._files(case_id)
        arrays, meta = cache.read_case(self.cache_folder, case_id)
        info = {k: meta[k] for k in ("grade", "crop_box", "original_shape", "affine", "labelled", "recipe")}
        return Case(case_id, arrays["image"], arrays.get("target"), tuple(meta["spacing"]),
                    info | {"folder": str(files.folder), "layout": meta.get("layout", CLASSIC)})

    # --- preparation (missbench/realdata/prepare.py drives these) -----------------------------------------

    def prepare_ids(self) -> list[str]:
        """Every case the chosen split uses, plus the validation folder's."""
        return self._used()

    def is_prepared(self, case_id: str, verify: bool = False) -> bool:
        """Cached from this recipe and from the case's files as they are now (missbench/realdata/cache.py:
        a cheap check on size and modification time, every file rehashed with ``verify``)."""
        return cache.has_case(self.cache_folder, case_id, self._files(case_id).files, self.recipe, verify)

    def check_headers(self, case_id: str) -> None:
        """Cheap checks before anything is written: readable headers, 3-D, same shape and affine."""
        check_geometry(self._files(case_id))

    def prepare_case(self, case_id: str) -> None:
        """Read, check and preprocess one case, and store it in the cache atomically."""
        case = self._files(case_id)
        imgs = check_geometry(case)
        volume = np.stack([_read_data(case, m, imgs[m]) for m in MODALITIES])
        target = _read_data(case, "seg", imgs["seg"]) if case.labelled else None
        if not volume.any():
            raise BratsDataError(f"case {case_id}: every modality is all zero ({case.folder})")
        crop = self.recipe["crop"]
        box = rfnet_box(volume, crop) if crop else [(0, s) for s in volume.shape[1:]]
        inside = (slice(None), *[slice(a, b) for a, b in box])
        if self.recipe["name"] == "rfnet":  # RFNet normalises the crop, ShaSpec the whole volume
            volume = rfnet_normalise(volume[inside], case_id, case.files)
        else:
            volume = shaspec_normalise(volume, case_id, case.files)[inside]
        arrays = {"image": np.ascontiguousarray(volume.transpose(0, 3, 1, 2), dtype=np.float32)}
        lost = 0
        if target is not None:
            inside = target[tuple(slice(a, b) for a, b in box)]
            lost = int(np.count_nonzero(target)) - int(np.count_nonzero(inside))
            arrays["target"] = np.ascontiguousarray(inside.transpose(2, 0, 1))
        ref = imgs[MODALITIES[0]]
        zooms = [round(float(z), 6) for z in ref.header.get_zooms()[:3]]
        meta = {
            "case_id": case_id, "grade": case.grade, "labelled": case.labelled, "recipe": self.recipe, "layout": case.layout,
            "crop_box": [list(b) for b in box], "original_shape": list(ref.shape), "affine": ref.affine.tolist(),
            "header": ref.header.binaryblock.hex(), "header_class": type(ref.header).__name__,
            "spacing": [zooms[2], zooms[0], zooms[1]], "axes": "D,H,W = NIfTI axes 2,0,1",
            "label_voxels_outside_crop": lost,
        }
        cache.write_case(self.cache_folder, case_id, arrays, meta, case.files, self.recipe)

    def run_meta(self) -> dict[str, Any]:
        return {"cache": {"folder": str(self.cache_folder), "recipe": self.recipe}, "layout": self.layout}

    # --- export ----------------------------------------------------------------------------------

    def write_label_map(self, case: Case, labels: np.ndarray, path: Path) -> None:
        """Save a label map of ``case`` (cached grid, D x H x W, the harness's labels {0,1,2,4}) as NIfTI in the
        original grid and label convention: pasted into the crop box of a zero volume of the original shape,
        with the original affine and header; a 2023 case's ET written as 3."""
        import nibabel as nib

        _, meta = cache.read_case(self.cache_folder, case.case_id)
        box = [slice(a, b) for a, b in meta["crop_box"]]
        labels = np.asarray(labels)
        bad = sorted(set(np.unique(labels).tolist()) - set(LABELS))
        if bad:
            raise ValueError(f"case {case.case_id}: label map holds labels {bad[:5]} outside {{0, 1, 2, 4}}")
        labels = LAYOUTS[meta.get("layout", CLASSIC)].write_labels(labels).transpose(1, 2, 0)
        if labels.shape != tuple(s.stop - s.start for s in box):
            raise ValueError(f"case {case.case_id}: label map of shape {labels.shape} (H, W, D) does not fit the crop box {meta['crop_box']}")
        full = np.zeros(meta["original_shape"], dtype=np.uint8)
        full[tuple(box)] = labels
        image_cls = {"Nifti1Header": nib.Nifti1Image, "Nifti2Header": nib.Nifti2Image}[meta["header_class"]]
        header = image_cls.header_class(binaryblock=bytes.fromhex(meta["header"]))
        header.set_data_dtype(np.uint8)
        header.set_slope_inter(1, 0)
        img = image_cls(full, np.asarray(meta["affine"]), header)
        data = img.to_bytes()
        write_atomic(path, gzip.compress(data, compresslevel=1, mtime=0) if path.suffix == ".gz" else data)

