"""Split files in the formats that circulate: U-HVED's csv + naming (shipped: missbench/realdata/brats2018_splits/),
RFNet-style txt lists."""

import hashlib

import pytest

from missbench.realdata.splits import SHIPPED_FOLDER, SHIPPED_SHA256, SplitError, read_split, strip_grade


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shipped_uhved_splits_parse_to_199_29_57_real_case_names(k):
    split = read_split(f"uhved{k}")
    assert (len(split.train), len(split.val), len(split.test)) == (199, 29, 57)
    every = set(split.train) | set(split.val) | set(split.test)
    assert len(every) == 285 and all(c.startswith("Brats18_") for c in every)
    if k == 1:  # the first cases of github.com/Jun-Jie-Shi/M2FTrans BraTS/BRATS2018_Training_none_npy/test1.txt
        assert {"Brats18_TCIA04_149_1", "Brats18_TCIA04_343_1", "Brats18_CBICA_ASO_1"} <= set(split.test)


def test_shipped_files_are_u_hveds_with_licence_and_attribution():
    """Each shipped file has the SHA-256 its README records (U-HVED's files, unchanged), beside U-HVED's MIT licence."""
    readme = (SHIPPED_FOLDER / "README.md").read_text()
    for name, digest in SHIPPED_SHA256.items():
        assert hashlib.sha256((SHIPPED_FOLDER / name).read_bytes()).hexdigest() == digest and digest in readme
    assert "1d293a87d496c52adafd69dbcea37767ac6a7ee8" in readme and "MIT License" in (SHIPPED_FOLDER / "LICENSE").read_text()
    assert "Copyright (c) 2019 ReubenDo" in (SHIPPED_FOLDER / "LICENSE").read_text()


def test_a_changed_shipped_file_is_refused(tmp_path, monkeypatch):
    import missbench.realdata.splits as splits

    for name in SHIPPED_SHA256:
        (tmp_path / name).write_bytes((SHIPPED_FOLDER / name).read_bytes())
    with open(tmp_path / "dataset_split_2.csv", "a") as f:
        f.write("HGG1_,Training\n")
    monkeypatch.setattr(splits, "SHIPPED_FOLDER", tmp_path)
    with pytest.raises(SplitError, match="dataset_split_2.csv: SHA-256"):
        read_split("uhved2")
    assert len(read_split("uhved1").test) == 57


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


def test_protocol_a_needs_only_the_data():
    """brats2018_a reads the shipped split 3 unless told otherwise; protocol B trains on every case."""
    from conftest import CHECKOUT
    from missbench.experiment.protocol import load_protocol

    a = load_protocol(CHECKOUT / "protocols" / "brats2018_a.yaml")
    b = load_protocol(CHECKOUT / "protocols" / "brats2018_b.yaml")
    for budget in ("smoke", "paper", "mmformer"):
        assert a.budget(budget)[2]["split"] == "uhved3" and b.budget(budget)[2]["split"] == "all"
