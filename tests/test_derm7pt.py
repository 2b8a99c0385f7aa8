"""The Derm7pt loader on small files in the release_v0 layout, and its errors."""

import csv
import re

import numpy as np
import pytest
from PIL import Image

from missbench.experiment import registry

D7 = registry.dataset_class("derm7pt")
COLUMNS = ["case_num", "diagnosis", "seven_point_score", "pigment_network", "streaks", "pigmentation",
           "regression_structures", "dots_and_globules", "blue_whitish_veil", "vascular_structures",
           "level_of_diagnostic_difficulty", "elevation", "location", "sex", "clinic", "derm", "notes", "management"]
DIAGNOSES = ["clark nevus", "melanoma (in situ)", "basal cell carcinoma", "seborrheic keratosis", "lentigo", "blue nevus"]


def write_release(root, n=6):
    (root / "meta").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        folder = root / "images" / f"G{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        for kind in ("c", "d"):
            Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(folder / f"{kind}{i}.jpg")
        rows.append({"case_num": i + 1, "diagnosis": DIAGNOSES[i % len(DIAGNOSES)], "seven_point_score": i % 4,
                     "pigment_network": ["absent", "typical", "atypical"][i % 3], "streaks": "absent",
                     "pigmentation": ["absent", "diffuse irregular"][i % 2], "regression_structures": "absent",
                     "dots_and_globules": ["regular", "irregular"][i % 2], "blue_whitish_veil": ["absent", "present"][i % 2],
                     "vascular_structures": "absent", "level_of_diagnostic_difficulty": "low",
                     "elevation": ["flat", "palpable"][i % 2], "location": ["back", "lower limbs", ""][i % 3],
                     "sex": ["female", "male"][i % 2], "clinic": f"G{i % 2}/c{i}.jpg", "derm": f"G{i % 2}/d{i}.jpg",
                     "notes": "", "management": "excision"})
    with open(root / "meta" / "meta.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    for name, idx in (("train", [0, 1, 2]), ("valid", [3]), ("test", [4, 5])):
        (root / "meta" / f"{name}_indexes.csv").write_text("indexes\n" + "".join(f"{i}\n" for i in idx))


def test_loads_the_release_layout(tmp_path):
    write_release(tmp_path)
    ds = D7(root=str(tmp_path), image_size=16)
    tr, va, te = (ds.samples(s) for s in ("train", "val", "test"))
    assert (len(tr), len(va), len(te)) == (3, 1, 2)
    # 3 + 1 + 2 + 1 + 2 + 2 + 1 criteria values, 2 elevations, 2 locations (an empty cell is none), 2 sexes
    assert ds.inputs() == {"clinic": ("image", (3, 16, 16)), "derm": ("image", (3, 16, 16)), "tabular": ("tabular", (18,))}
    assert tr.x[0].shape == (3, 3, 16, 16) and tr.x[2].shape == (3, 18) and tr.x[0].min() >= -1
    assert tr.y.tolist() == [1, 2, 0] and te.y.tolist() == [3, 1]  # NEV, MEL, BCC | MISC (lentigo), NEV
    assert te.ids == ["derm7pt_0004", "derm7pt_0005"]
    assert tr.x[2].sum(1).tolist() == [10, 10, 9] and va.x[2].sum() == 10  # row 2 has an empty location
    assert ds.task_params()["n_classes"] == 5


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: (r / "meta" / "meta.csv").unlink(), "missing"),
        (lambda r: (r / "meta" / "test_indexes.csv").unlink(), "test_indexes.csv"),
        (lambda r: (r / "meta" / "train_indexes.csv").write_text("rows\n1\n"), "expected a column 'indexes'"),
        (lambda r: (r / "meta" / "valid_indexes.csv").write_text("indexes\n99\n"), "index 99 is outside meta.csv's 6 rows"),
        (lambda r: (r / "meta" / "valid_indexes.csv").write_text("indexes\nthree\n"), "valid_indexes.csv"),
        (lambda r: (r / "images" / "G1" / "d5.jpg").unlink(), "missing image"),
        (lambda r: (r / "images" / "G0" / "c0.jpg").write_bytes(b"junk"), "c0.jpg: cannot read as an image"),
        (lambda r: (r / "meta" / "meta.csv").write_text((r / "meta" / "meta.csv").read_text().replace("clark nevus", "freckle")),
         "unknown diagnosis 'freckle'"),
        (lambda r: (r / "meta" / "meta.csv").write_text((r / "meta" / "meta.csv").read_text().replace("streaks", "streak", 1)),
         "missing column 'streaks'"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path, damage, message):
    write_release(tmp_path)
    damage(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):
        D7(root=str(tmp_path), image_size=8).samples("train")


def test_root_is_required(monkeypatch):
    monkeypatch.delenv("MISSBENCH_DERM7PT_ROOT", raising=False)
    with pytest.raises(ValueError, match="MISSBENCH_DERM7PT_ROOT"):
        D7().samples("train")
