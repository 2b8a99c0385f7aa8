"""The brats2018 data set on the BraTS 2021 and 2023 layouts: detection, the 2023 label map (ET 3 read as 4,
written back as 3), the cache kept apart by layout, and refused mixed or unknown layouts."""

import json

import nibabel as nib
import numpy as np
import pytest
from brats_files import case_arrays, save, write_case

from missbench.cli import main
from missbench.experiment import registry
from missbench.realdata import cache, export
from missbench.realdata.prepare import PrepareError, prepare

Brats = registry.dataset_class("brats2018")
GLI = ["BraTS-GLI-00000-000", "BraTS-GLI-00002-000", "BraTS-GLI-00003-001"]


def _lists(folder, train, val, test):
    """A folder of case lists (train.txt, val.txt, test.txt): how a split of unlisted data is given."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, ids in (("train", train), ("val", val), ("test", test)):
        (folder / f"{name}.txt").write_text("".join(f"{c}\n" for c in ids))
    return folder


@pytest.fixture(scope="module")
def gli(tmp_path_factory):
    """Three labelled BraTS 2023 cases (one .nii, one without ET) and one unlabelled validation case, prepared."""
    tmp = tmp_path_factory.mktemp("gli")
    for i, case in enumerate(GLI):
        write_case(tmp / "train", case, None, seed=i, layout="2023", ext=".nii" if i == 1 else ".nii.gz", et=i != 2)
    write_case(tmp / "val", "BraTS-GLI-00100-000", None, seed=9, layout="2023", labelled=False)
    params = {"root": str(tmp / "train"), "val_root": str(tmp / "val"), "cache": str(tmp / "cache"), "crop": 8}
    prepare(Brats.for_prepare(**params), progress=False)
    return tmp, params


def test_brats2021_flat_layout_prepares_and_loads_with_a_split_folder(tmp_path):
    ids = ["BraTS2021_00000", "BraTS2021_00002", "BraTS2021_00003"]
    for i, case in enumerate(ids):
        write_case(tmp_path / "train", case, None, seed=i)
    split = _lists(tmp_path / "split", ids[:1], ids[1:2], ids[2:])
    params = {"root": str(tmp_path / "train"), "cache": str(tmp_path / "cache"), "split": str(split)}
    prepare(Brats.for_prepare(**params), progress=False)
    ds = Brats(**params)
    assert [ds.case_ids(s) for s in ("train", "val", "test", "export")] == [ids[:1], ids[1:2], ids[2:], ids[2:]]
    assert ds.layout == "2018-2021" and ds.recipe == {"name": "rfnet", "crop": 128, "version": 1}  # read as 2018-2020 are
    case = ds.load("BraTS2021_00002")
    assert case.image.shape == (4, 16, 20, 24) and case.info["layout"] == "2018-2021" and case.info["grade"] is None
    np.testing.assert_array_equal(case.target, case_arrays(1)[1].transpose(2, 0, 1))
    assert json.loads((ds.cache_folder / "BraTS2021_00002" / "meta.json").read_text())["layout"] == "2018-2021"


def test_brats2023_reads_et_3_as_4_with_its_own_cache(gli):
    tmp, params = gli
    ds = Brats(**params, split="all")
    assert ds.layout == "2023" and ds.case_ids("train") == GLI and ds.case_ids("export") == ["BraTS-GLI-00100-000"]
    assert ds.recipe == {"name": "rfnet", "crop": 8, "version": 1, "layout": "2023"} and ds.run_meta()["layout"] == "2023"
    # The same parameters on a 2018-2021 root use another cache folder: 2023 entries are never read for it.
    classic = {k: v for k, v in ds.recipe.items() if k != "layout"}
    assert ds.cache_folder != cache.cache_folder(ds.cache_folder.parent, "brats2018", classic)
    assert json.loads((ds.cache_folder / "recipe.json").read_text())["recipe"]["layout"] == "2023"
    for i, case_id in enumerate(GLI):
        seg = next((tmp / "train" / case_id).glob(f"{case_id}-seg.nii*"))
        in_file = np.asarray(nib.load(seg).dataobj)
        assert 4 not in in_file and (3 in in_file) == (i != 2)
        case = ds.load(case_id)
        (x0, x1), (y0, y1), (z0, z1) = case.info["crop_box"]  # crop=8: the brain's box
        labels = case_arrays(i, et=i != 2)[1][x0:x1, y0:y1, z0:z1]
        np.testing.assert_array_equal(case.target, labels.transpose(2, 0, 1))  # ET where the file holds 3
        assert (4 in case.target) == (i != 2) and 3 not in case.target and case.info["layout"] == "2023"
        assert case.image.shape == (4, *case.target.shape) and case.target.size < 16 * 20 * 24
    assert ds.load("BraTS-GLI-00100-000").target is None
    split = Brats(**params, split=str(_lists(tmp / "split", GLI[:1], GLI[1:2], GLI[2:])))  # a split of one's own
    assert [split.case_ids(s) for s in ("train", "val", "test", "export")] == [GLI[:1], GLI[1:2], GLI[2:], ["BraTS-GLI-00100-000"]]
    meta = json.loads((ds.cache_folder / GLI[0] / "meta.json").read_text())
    assert meta["layout"] == "2023" and meta["sources"]["FLAIR"]["name"] == f"{GLI[0]}-t2f.nii.gz"


def test_brats2023_export_writes_et_back_as_3(gli, tmp_path):
    tmp, params = gli
    ds = Brats(**params, split="all")
    case = ds.load(GLI[1])  # plain .nii
    ds.write_label_map(case, case.target, tmp_path / "p.nii.gz")  # the call export_run makes, harness labels in
    again = np.asarray(nib.load(tmp_path / "p.nii.gz").dataobj)
    np.testing.assert_array_equal(again, np.asarray(nib.load(tmp / "train" / GLI[1] / f"{GLI[1]}-seg.nii").dataobj))
    assert set(np.unique(again)) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match=r"BraTS-GLI-00002-000: label map holds labels \[3\] outside \{0, 1, 2, 4\}"):
        ds.write_label_map(case, np.where(case.target == 4, 3, case.target), tmp_path / "q.nii.gz")


def test_bench_export_of_a_2023_run_writes_et_as_3(gli, tmp_path, monkeypatch):
    tmp, params = gli
    common = ["--data-root", params["root"], "--dataset-param", f"val_root={params['val_root']}",
              "--dataset-param", f"cache={params['cache']}", "--dataset-param", "crop=8"]
    assert main(["--protocol", "brats2018_b", "--budget", "smoke", "--methods", "zero_fill", "--param", "zero_fill.width=2",
                 "--param", "zero_fill.depth=2", "--no-progress", "--threads", "1", "--out", str(tmp_path / "sweep"), *common]) == 0
    run = next(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert json.loads((run / "meta.json").read_text())["data"]["layout"] == "2023"
    # A smoke model predicts no ET: the prediction is replaced by a known harness label map (ET = 4) of the cached grid.
    truth = case_arrays(9)[1]
    box = Brats(**params, split="all").load("BraTS-GLI-00100-000").info["crop_box"]
    inside = tuple(slice(a, b) for a, b in box)
    monkeypatch.setattr(export, "predict_case", lambda *args: [truth[inside].transpose(2, 0, 1)])
    assert main(["export", str(tmp_path / "sweep"), "--out", str(tmp_path / "out"), "--threads", "1", "--no-progress"]) == 0
    (written,) = (tmp_path / "out").rglob("*.nii.gz")
    assert written.name == "BraTS-GLI-00100-000.nii.gz"  # the 2023 portal's <case id>.nii.gz
    expect = np.zeros_like(truth)
    expect[inside] = np.where(truth == 4, 3, truth)[inside]
    assert (expect == 3).any()
    np.testing.assert_array_equal(np.asarray(nib.load(written).dataobj), expect)


def test_a_label_4_in_a_2023_file_is_refused_naming_the_file(tmp_path):
    folder = write_case(tmp_path / "train", "BraTS-GLI-00001-000", None, layout="2023")
    save(folder / "BraTS-GLI-00001-000-seg.nii.gz", case_arrays(0)[1])  # ET written as 4: not a 2023 label
    ds = Brats.for_prepare(root=str(tmp_path / "train"), cache=str(tmp_path / "cache"))
    with pytest.raises(PrepareError) as err:
        prepare(ds, progress=False)
    line = str(err.value).splitlines()[1]
    assert f"{folder / 'BraTS-GLI-00001-000-seg.nii.gz'} holds labels [4] outside {{0, 1, 2, 3}}" in line
    assert not (ds.cache_folder / "BraTS-GLI-00001-000").exists()


@pytest.mark.parametrize("kind", ["mixed root", "both in one folder", "unknown", "val root of another layout"])
def test_mixed_or_unknown_layouts_are_refused_in_one_line_naming_the_folder(tmp_path, kind):
    root, val = tmp_path / "train", None
    if kind == "mixed root":
        write_case(root, "BraTS2021_00000", None)
        write_case(root, "BraTS-GLI-00000-000", None, layout="2023")
        named = [root / "BraTS2021_00000", root / "BraTS-GLI-00000-000"]
    elif kind == "both in one folder":
        folder = write_case(root, "BraTS-GLI-00000-000", None, layout="2023")
        write_case(root, "BraTS-GLI-00000-000", None)  # the 2018-2021 names beside them
        named = [folder]
    elif kind == "unknown":
        (root / "case_1").mkdir(parents=True)
        save(root / "case_1" / "case_1_T1.nii.gz", case_arrays(0)[0][1])
        named = [root]
    else:
        write_case(root, "BraTS2021_00000", None)
        val = tmp_path / "val"
        write_case(val, "BraTS-GLI-00000-000", None, layout="2023", labelled=False)
        named = [root, val]
    with pytest.raises(ValueError) as err:
        Brats.for_prepare(root=str(root), val_root=str(val) if val else None, cache=str(tmp_path / "c"))
    message = str(err.value)
    assert "\n" not in message and all(str(f) in message for f in named), message
