"""Split files in the formats that circulate: U-HVED's csv + naming, RFNet-style txt lists."""

import pytest

from conftest import CHECKOUT
from missbench.realdata.splits import SplitError, read_split, strip_grade

# U-HVED's files sit beside the checkout in the development workspace (they cannot be shipped);
# a fresh clone (CI) does not have them.
SHARED_SPLITS = CHECKOUT.parent / "shared" / "data" / "brats2018_splits"


@pytest.mark.skipif(not (SHARED_SPLITS / "corresponding_naming.csv").exists(),
                    reason=f"U-HVED split files not present at {SHARED_SPLITS} (not shipped with the project)")
@pytest.mark.parametrize("k", [1, 2, 3])
def test_uhved_splits_parse_to_199_29_57_real_case_names(k):
    split = read_split(SHARED_SPLITS / f"dataset_split_{k}.csv")
    assert (len(split.train), len(split.val), len(split.test)) == (199, 29, 57)
    every = set(split.train) | set(split.val) | set(split.test)
    assert len(every) == 285 and all(c.startswith("Brats18_") for c in every)
    if k == 1:  # M2FTrans's test1.txt starts with these (baselines.md §0: identical lists)
        assert {"Brats18_TCIA04_149_1", "Brats18_CBICA_ASO_1", "Brats18_TCIA10_628_1"} <= set(split.test)


def test_rfnet_lists_with_and_without_grade_prefix(tmp_path):
    (tmp_path / "train3.txt").write_text("HGG_Brats18_A_1\nLGG_Brats18_B_1\n\n")
    (tmp_path / "val3.txt").write_text("Brats18_C_1\n")
    (tmp_path / "test3.txt").write_text("Brats18_D_1\r\nBrats18_E_1\r\n")
    split = read_split(tmp_path / "train3.txt")
    assert split.train == ("Brats18_A_1", "Brats18_B_1") and split.val == ("Brats18_C_1",)
    assert split.test == ("Brats18_D_1", "Brats18_E_1")
    folder = tmp_path / "f"
    folder.mkdir()
    for name in ("train", "val", "test"):
        (folder / f"{name}.txt").write_text(f"HG_BraTS20_Training_{name}\n")
    assert read_split(folder).cases("val") == ["BraTS20_Training_val"]
    assert strip_grade("Brats18_2013_2_1") == "Brats18_2013_2_1"


@pytest.mark.parametrize("files, path, message", [
    ({}, "nope.csv", "not found"),
    ({"dataset_split_1.csv": "HGG1_,Training\n"}, "dataset_split_1.csv", "corresponding_naming.csv"),
    ({"corresponding_naming.csv": "name,folder\nHGG1,HGG_Brats18_A_1\n", "dataset_split_1.csv": "HGG1_,Training\nHGG2_,Inference\n"},
     "dataset_split_1.csv", r"line 2: id 'HGG2_'"),
    ({"corresponding_naming.csv": "name,folder\n", "dataset_split_1.csv": "HGG1_,Testing\n"}, "dataset_split_1.csv", "line 1: expected"),
    ({"train.txt": "A\nA\n", "val.txt": "", "test.txt": "B\n"}, "train.txt", "'A' is listed twice"),
    ({"train.txt": "A\n", "val.txt": ""}, "train.txt", "test.txt"),
    ({"list.csv.txt": "A\n"}, "list.csv.txt", "expected a train"),
])
def test_bad_split_files_are_named(tmp_path, files, path, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(SplitError, match=message):
        read_split(tmp_path / path)
