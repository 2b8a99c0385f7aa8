"""Published BraTS case splits (BraTS 2018 protocol A: the U-HVED / RFNet local splits), shipped or read from
the files that circulate.

Two formats hold the same 199 / 29 / 57 lists of the U-HVED / RFNet local splits:
- U-HVED's ``dataset_split_{1,2,3}.csv`` (``<short id>,<Training|Validation|Inference>``) with
  ``corresponding_naming.csv`` beside it (``name,folder``: ``HGG2,HGG_Brats18_CBICA_AAG_1``);
- RFNet-style lists ``train{k}.txt`` / ``val{k}.txt`` / ``test{k}.txt`` (one case per line; some
  copies prefix the grade, ``HGG_`` or ``HG_``), or ``train.txt`` / ``val.txt`` / ``test.txt`` in a folder.

Case ids are returned as the BraTS case folder names (``Brats18_CBICA_AAG_1``), grade prefix removed.
U-HVED's three splits ship with the project (missbench/realdata/brats2018_splits/: github.com/ReubenDo/U-HVED
at 1d293a87d496c52adafd69dbcea37767ac6a7ee8, ``splits/``, MIT, with its licence and each file's SHA-256) and
are read by name: ``split=uhved1``, ``uhved2``, ``uhved3``. Any other list is given by path.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from missbench.core.dataset import SPLITS

#: The shipped splits (README.md there: source, licence) and the SHA-256 every shipped file must have.
SHIPPED_FOLDER = Path(__file__).with_name("brats2018_splits")
SHIPPED = {f"uhved{k}": f"dataset_split_{k}.csv" for k in (1, 2, 3)}
SHIPPED_SHA256 = {
    "corresponding_naming.csv": "0715119a5ca99aef20cffd3ab6fd885ff585ab9e1e6943ea0408ffbbb50c387b",
    "dataset_split_1.csv": "799bf8b59b3790137967f24cc5c3a03bdaa2c85889fb077b725c284d7f0e1700",
    "dataset_split_2.csv": "7b04c7ff5f0186bc9d5aa463f940d869b82af419562718bb86485a84062c8160",
    "dataset_split_3.csv": "2e6ede5c9c3d5709e4fd4eed291ffb5251b7b044aa4d1ebeb98dc1bdbebabe73",
}
#: U-HVED's role names -> the harness's split names.
UHVED_ROLES = {"Training": "train", "Validation": "val", "Inference": "test"}
_GRADE_PREFIX = re.compile(r"^(?:HGG|LGG|HG|LG)_(.+)$")


class SplitError(ValueError):
    """A malformed or unreadable split file; the message names the file (and line)."""


@dataclass(frozen=True)
class Split:
    """Case ids per split name, in file order, and where they came from."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    source: str

    def cases(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
        return list(getattr(self, split))


def strip_grade(name: str) -> str:
    """``HGG_Brats18_X_1`` or ``HG_BraTS20_Training_001`` -> the case folder name."""
    m = _GRADE_PREFIX.match(name)
    return m.group(1) if m else name


def _rows(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [[c.strip() for c in row] for row in csv.reader(f) if any(c.strip() for c in row)]
    except OSError as e:
        raise SplitError(f"{path}: cannot read split file: {e.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise SplitError(f"{path}: not a text CSV file: {e}") from None


def read_uhved(csv_path: Path, naming_path: Path | None = None) -> Split:
    """U-HVED's ``dataset_split_k.csv``; ``corresponding_naming.csv`` is looked for beside it."""
    csv_path = Path(csv_path)
    naming_path = Path(naming_path) if naming_path else csv_path.with_name("corresponding_naming.csv")
    if not naming_path.exists():
        raise SplitError(f"{csv_path}: U-HVED split needs {naming_path.name} beside it (short id -> case folder); not found: {naming_path}")
    naming: dict[str, str] = {}
    for i, row in enumerate(_rows(naming_path), 1):
        if i == 1 and row[:2] == ["name", "folder"]:
            continue
        if len(row) != 2:
            raise SplitError(f"{naming_path}: line {i}: expected 'name,folder', got {row}")
        naming[row[0]] = strip_grade(row[1])
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i, row in enumerate(_rows(csv_path), 1):
        if len(row) != 2 or row[1] not in UHVED_ROLES:
            raise SplitError(f"{csv_path}: line {i}: expected '<id>,<{'|'.join(UHVED_ROLES)}>', got {row}")
        short = row[0].rstrip("_")  # U-HVED writes 'HGG100_'
        if short not in naming:
            raise SplitError(f"{csv_path}: line {i}: id {row[0]!r} is not in {naming_path.name}")
        out[UHVED_ROLES[row[1]]].append(naming[short])
    return _checked(out, str(csv_path))


def _list_file(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as e:
        raise SplitError(f"{path}: cannot read case list: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise SplitError(f"{path}: not a text file: {e}") from None
    return [strip_grade(line.strip()) for line in lines if line.strip()]


def read_lists(path: Path) -> Split:
    """RFNet-style lists: a ``train*.txt`` file (``val*.txt`` and ``test*.txt`` beside it, same suffix)
    or a folder holding ``train.txt``, ``val.txt`` and ``test.txt``."""
    path = Path(path)
    if path.is_dir():
        files = {s: path / f"{s}.txt" for s in SPLITS}
    elif path.name.startswith("train") and path.suffix == ".txt":
        files = {s: path.with_name(s + path.name[len("train"):]) for s in SPLITS}
    else:
        raise SplitError(f"{path}: expected a train*.txt list or a folder with train.txt, val.txt and test.txt")
    missing = [str(f) for f in files.values() if not f.exists()]
    if missing:
        raise SplitError(f"{path}: case list(s) not found: {', '.join(missing)}")
    return _checked({s: _list_file(f) for s, f in files.items()}, str(files["train"]))


def shipped(name: str) -> Path:
    """The shipped U-HVED split file of ``name`` (``uhved1`` .. ``uhved3``), its and the naming file's SHA-256
    checked."""
    import hashlib

    path = SHIPPED_FOLDER / SHIPPED[name]
    for f in (path, SHIPPED_FOLDER / "corresponding_naming.csv"):
        try:
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
        except OSError as e:
            raise SplitError(f"{f}: cannot read the shipped split file: {e.strerror}") from None
        if digest != SHIPPED_SHA256[f.name]:
            raise SplitError(f"{f}: SHA-256 {digest[:12]}... is not the shipped file's {SHIPPED_SHA256[f.name][:12]}...; "
                             f"restore it from the repository")
    return path


def read_split(path: str | Path) -> Split:
    """A split given by name (``uhved1`` .. ``uhved3``, the shipped U-HVED splits) or by path: a U-HVED ``.csv``,
    an RFNet-style ``train*.txt``, or a folder of lists."""
    if str(path) in SHIPPED:
        return read_uhved(shipped(str(path)))
    path = Path(path).expanduser()
    if not path.exists():
        raise SplitError(f"split file not found: {path}")
    if path.suffix == ".csv":
        return read_uhved(path)
    return read_lists(path)


def _checked(out: dict[str, list[str]], source: str) -> Split:
    seen: dict[str, str] = {}
    for split in SPLITS:
        for case in out[split]:
            if case in seen:
                raise SplitError(f"{source}: case {case!r} is listed twice ({seen[case]} and {split})")
            seen[case] = split
    if not out["train"] or not out["test"]:
        raise SplitError(f"{source}: the train and test lists must not be empty (got {len(out['train'])} and {len(out['test'])})")
    return Split(tuple(out["train"]), tuple(out["val"]), tuple(out["test"]), source)
