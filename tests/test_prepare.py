"""`bench.py prepare`: the recipes, the cache (keyed by recipe, resumable, memory-mapped), bad input."""

import gzip
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from brats_files import AFFINE, case_arrays, save, write_case, write_lists, write_set

from missbench.cli import main
from missbench.experiment import registry
from missbench.realdata import cache

Brats = registry.dataset_class("brats2018")


def _params(tmp, **extra):
    return {"root": str(tmp / "train"), "val_root": str(tmp / "val"), "cache": str(tmp / "cache"), **extra}


def _prepare(tmp, *extra):
    args = ["prepare", "--dataset", "brats2018", "--no-progress", "--jobs", "2", "--data-root", str(tmp / "train"),
            "--dataset-param", f"val_root={tmp / 'val'}", "--dataset-param", f"cache={tmp / 'cache'}"]
    return main([*args, *extra])


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")} if folder.exists() else {}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("brats")
    ids = write_set(tmp / "train", tmp / "val")
    assert _prepare(tmp) == 0
    return tmp, ids


def test_prepare_caches_every_case_by_recipe_and_a_rerun_skips_them(prepared, capsys):
    tmp, ids = prepared
    folder = Brats.for_prepare(**_params(tmp)).cache_folder
    assert folder.parent == tmp / "cache" and folder.name.startswith("brats2018_rfnet_")
    assert json.loads((folder / "recipe.json").read_text())["recipe"] == {"name": "rfnet", "crop": 128, "version": 1}
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(ids["train"] + ids["val"])
    before = _snapshot(folder)
    assert _prepare(tmp) == 0
    assert "0 case(s), 8 already cached" in capsys.readouterr().out
    assert _snapshot(folder) == before
    shutil.rmtree(folder / "Brats18_B_1")  # as if killed before this case finished: resume does just it
    assert _prepare(tmp) == 0
    assert "1 case(s), 7 already cached" in capsys.readouterr().out
    # Another recipe gets another folder; the first is untouched.
    assert _prepare(tmp, "--dataset-param", "crop=8") == 0
    other = Brats.for_prepare(**_params(tmp, crop=8)).cache_folder
    assert other != folder and (other / "Brats18_A_1" / "image.npy").exists()
    assert {k: v for k, v in _snapshot(folder).items() if "Brats18_B_1" not in k} == {k: v for k, v in before.items() if "Brats18_B_1" not in k}


def test_cases_load_memory_mapped_in_harness_order_with_header_spacing(prepared):
    tmp, ids = prepared
    ds = Brats(**_params(tmp, split="all"))
    assert ds.case_ids("train") == sorted(ids["train"]) and ds.case_ids("test") == [] and ds.case_ids("export") == ids["val"]
    for case_id in ids["train"]:  # int16 and float32, gzipped and plain, HGG and LGG
        case = ds.load(case_id)
        image, labels = case_arrays(ids["train"].index(case_id), et=case_id != "Brats18_C_1")  # C: LGG without ET
        assert isinstance(case.image, np.memmap) and case.image.dtype == np.float32 and case.target.dtype == np.uint8
        assert case.image.shape == (4, 16, 20, 24) and case.target.shape == (16, 20, 24)  # D, H, W = NIfTI z, x, y
        np.testing.assert_array_equal(case.target, labels.transpose(2, 0, 1))
        assert case.spacing == pytest.approx((1.5, 1.0, 1.2))
        assert case.info["grade"] == ("LGG" if case_id in ("Brats18_C_1", "Brats18_D_1", "Brats18_F_1") else "HGG")
        brain = image.sum(0).transpose(2, 0, 1) > 0
        for m in range(4):  # RFNet: z-scored over brain voxels, applied to the whole crop
            assert case.image[m][brain].mean() == pytest.approx(0, abs=1e-4)
            assert case.image[m][brain].std() == pytest.approx(1, abs=1e-3)
            assert np.ptp(case.image[m][~brain]) == 0
    assert ds.load("Brats18_V1_1").target is None
    case = ds.load("Brats18_A_1")
    case.image[:] = 0  # copy-on-write: the cache is not changed
    assert np.abs(ds.load("Brats18_A_1").image).sum() > 0


def test_rfnet_crop_box_follows_sup_128():
    mod = sys.modules[Brats.__module__]
    vol = np.zeros((2, 240, 240, 155), np.float32)
    vol[1, 50:101, 3:201, 10:140] = 1  # non-zero x 50..100, y 3..200, z 10..139
    # x: extent 50 < 128 -> grown by 39 each side (+1 at the end); y: not grown, upper bound exclusive
    # of the last voxel (RFNet); z: grown by 0 ... (128 - 129) -> not grown either.
    assert mod.rfnet_box(vol, 128) == [(11, 140), (3, 200), (10, 139)]
    vol[:] = 0
    vol[0, 0:5, 230:240, 0:155] = 2
    assert mod.rfnet_box(vol, 128) == [(0, 129), (171, 240), (0, 154)]  # shifted to 0; clipped at the end


def test_shaspec_recipe_clips_at_the_histogram_maximum_and_zeroes_background(tmp_path):
    image, labels = case_arrays(0)
    image = np.round(image / 20)  # intensities 0..~60 in 1-wide bins; a few outliers far above
    image[:, 10, 12, 5:9] = 5000
    folder = tmp_path / "train" / "HGG" / "Brats18_S_1"
    folder.mkdir(parents=True)
    for suffix, vol in zip(("flair", "t1", "t1ce", "t2"), image):
        save(folder / f"Brats18_S_1_{suffix}.nii.gz", vol.astype(np.float32))
    save(folder / "Brats18_S_1_seg.nii.gz", labels)
    ds = Brats.for_prepare(root=str(tmp_path / "train"), cache=str(tmp_path / "cache"), recipe="shaspec")
    assert ds.recipe["crop"] == 0
    ds.prepare_case("Brats18_S_1")
    case = Brats(root=str(tmp_path / "train"), cache=str(tmp_path / "cache"), recipe="shaspec", split="all").load("Brats18_S_1")
    assert case.image.shape == (4, 16, 20, 24)  # no crop
    x = image[0]
    hist, _ = np.histogram(x, bins=int(x.max()))
    top = np.flatnonzero(hist >= 50)[-1]
    clipped = np.minimum(x, top)
    fg = clipped != 0
    expect = np.where(fg, (clipped - clipped[fg].mean()) / clipped[fg].std(), 0).transpose(2, 0, 1)
    np.testing.assert_allclose(case.image[0], expect, atol=1e-4)
    assert case.image[0].max() < 10  # the 5000 outliers were clipped


def _bad_case(root, kind):
    """A new training case ``Brats18_BAD_1`` with one defect; returns the file the error must name."""
    folder = write_case(root, "Brats18_BAD_1", "HGG", seed=3)
    if kind == "missing modality":
        (folder / "Brats18_BAD_1_t1ce.nii.gz").unlink()
        return "Brats18_BAD_1_t1ce"
    if kind == "no seg":
        (folder / "Brats18_BAD_1_seg.nii.gz").unlink()
        return "Brats18_BAD_1_seg"
    if kind == "shape":
        save(folder / "Brats18_BAD_1_t2.nii.gz", np.zeros((20, 24, 15), np.int16))
        return "Brats18_BAD_1_t2.nii.gz"
    if kind == "affine":
        save(folder / "Brats18_BAD_1_t1.nii.gz", case_arrays(3)[0][1].astype(np.int16), AFFINE + np.diag([0, 0, 0.5, 0]))
        return "Brats18_BAD_1_t1.nii.gz"
    if kind == "labels":
        labels = case_arrays(3)[1]
        labels[labels == 4] = 3
        save(folder / "Brats18_BAD_1_seg.nii.gz", labels)
        return "Brats18_BAD_1_seg.nii.gz"
    if kind == "non-finite":
        flair = case_arrays(3)[0][0].astype(np.float32)
        flair[5, 5, 5] = np.nan
        save(folder / "Brats18_BAD_1_flair.nii.gz", flair)
        return "Brats18_BAD_1_flair.nii.gz"
    if kind == "empty file":
        (folder / "Brats18_BAD_1_t2.nii.gz").write_bytes(b"")
        return "Brats18_BAD_1_t2.nii.gz"
    if kind == "unreadable header":
        (folder / "Brats18_BAD_1_flair.nii.gz").write_bytes(b"not a nifti file at all" * 20)
        return "Brats18_BAD_1_flair.nii.gz"
    if kind == "truncated voxels":
        data = gzip.decompress((folder / "Brats18_BAD_1_t1.nii.gz").read_bytes())
        (folder / "Brats18_BAD_1_t1.nii.gz").write_bytes(gzip.compress(data[: len(data) // 2]))
        return "Brats18_BAD_1_t1.nii.gz"
    raise AssertionError(kind)


BAD = ["missing modality", "no seg", "shape", "affine", "labels", "non-finite", "empty file", "unreadable header", "truncated voxels"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_is_named_and_leaves_cache_and_results_untouched(prepared, tmp_path, kind, capsys):
    src, ids = prepared
    shutil.copytree(src / "train", tmp_path / "train")
    shutil.copytree(src / "cache", tmp_path / "cache")
    named = _bad_case(tmp_path / "train", kind)
    before = _snapshot(tmp_path / "cache")
    assert main(["prepare", "--dataset", "brats2018", "--no-progress", "--data-root", str(tmp_path / "train"),
                 "--dataset-param", f"cache={tmp_path / 'cache'}"]) == 2
    err = capsys.readouterr().err
    assert "Brats18_BAD_1" in err and named in err, err
    assert _snapshot(tmp_path / "cache") == before
    # A run refuses before writing anything: the case is not in the cache (or its files are bad).
    out = tmp_path / "results"
    lists = write_lists(tmp_path / "lists", ["Brats18_A_1", "Brats18_BAD_1"], [], ["Brats18_B_1"])
    assert main(["--protocol", "brats2018_a", "--budget", "smoke", "--methods", "zero_fill", "--no-progress",
                 "--data-root", str(tmp_path / "train"), "--dataset-param", f"cache={tmp_path / 'cache'}",
                 "--dataset-param", f"split={lists}", "--out", str(out)]) == 2
    assert "Brats18_BAD_1" in capsys.readouterr().err and not out.exists()


def test_split_naming_cases_not_on_disk_is_refused(prepared, tmp_path, capsys):
    src, _ = prepared
    lists = write_lists(tmp_path / "lists", ["Brats18_A_1", "Brats18_ZZZ_1"], [], ["Brats18_B_1"])
    with pytest.raises(ValueError, match=r"names 1 cases not in .*Brats18_ZZZ_1"):
        Brats(**_params(src, split=str(lists)))
    assert main(["prepare", "--dataset", "brats2018", "--no-progress", "--data-root", str(src / "train"),
                 "--dataset-param", f"cache={tmp_path / 'cache'}", "--dataset-param", f"split={lists}"]) == 2
    assert "Brats18_ZZZ_1" in capsys.readouterr().err and not (tmp_path / "cache").exists()


def test_a_changed_source_of_equal_size_is_redone_and_verify_rehashes_everything(prepared, tmp_path, capsys, monkeypatch):
    src, _ = prepared
    for name in ("train", "val", "cache"):
        shutil.copytree(src / name, tmp_path / name)  # copies keep modification times: the cache stays current
    assert _prepare(tmp_path) == 0 and "0 case(s), 8 already cached" in capsys.readouterr().out
    folder = Brats.for_prepare(**_params(tmp_path)).cache_folder
    assert json.loads((folder / "recipe.json").read_text())["sha256"] == hashlib.sha256(
        json.dumps(Brats.for_prepare(**_params(tmp_path)).recipe, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def relabel(case_id: str) -> Path:
        """ET relabelled as necrotic core in an uncompressed seg file: same name and size, other labels."""
        seg = next((tmp_path / "train").glob(f"*/{case_id}/{case_id}_seg.nii"))
        size = seg.stat().st_size
        labels = np.asarray(nib.load(seg).dataobj).copy()
        assert (labels == 4).any()
        labels[labels == 4] = 1
        save(seg, labels)
        assert seg.stat().st_size == size
        return seg

    seg = next((tmp_path / "train").glob("*/Brats18_C_1/Brats18_C_1_seg.nii*"))
    os.utime(seg, ns=(seg.stat().st_atime_ns, seg.stat().st_mtime_ns + 10**9))  # touched (a copy without times): same content
    hashed = []
    real_sha256 = cache.file_sha256
    monkeypatch.setattr(cache, "file_sha256", lambda path: hashed.append(path.name) or real_sha256(path))
    Brats(**_params(tmp_path, split="all"))
    assert hashed == [seg.name]  # rehashed once, found unchanged, its new time recorded ...
    Brats(**_params(tmp_path, split="all"))
    assert hashed == [seg.name]  # ... so the next run does not read it again
    monkeypatch.undo()

    relabel("Brats18_D_1")  # a new modification time: the cheap check rehashes it
    with pytest.raises(ValueError, match=r"1 of 8 cases are not in the cache .*, or were cached from other files"):
        Brats(**_params(tmp_path, split="all"))  # a run refuses the stale case
    assert _prepare(tmp_path) == 0 and "1 case(s), 7 already cached" in capsys.readouterr().out
    assert 4 not in Brats(**_params(tmp_path, split="all")).load("Brats18_D_1").target

    seg = relabel("Brats18_B_1")
    before = seg.stat()
    os.utime(seg, ns=(before.st_atime_ns, json.loads((folder / "Brats18_B_1" / "meta.json").read_text())["sources"]["seg"]["mtime_ns"]))
    image = folder / "Brats18_A_1" / "image.npy"
    data = bytearray(image.read_bytes())
    data[-8:] = b"\x7f" * 8  # a damaged cached array, same size
    image.write_bytes(bytes(data))
    assert _prepare(tmp_path) == 0 and "0 case(s), 8 already cached" in capsys.readouterr().out  # same size and time: trusted
    assert _prepare(tmp_path, "--verify") == 0 and "2 case(s), 6 already cached (verified)" in capsys.readouterr().out
    ds = Brats(**_params(tmp_path, split="all"))
    assert 4 not in ds.load("Brats18_B_1").target and np.isfinite(ds.load("Brats18_A_1").image).all()
    assert ds.load("Brats18_A_1").image[-1, -1, -1, -1] != np.frombuffer(b"\x7f" * 4, np.float32)[0]
    recipe = folder / "recipe.json"
    recipe.write_text(recipe.read_text().replace('"sha256": "', '"sha256": "0'))  # another recipe in this folder
    assert _prepare(tmp_path) == 2 and f"{recipe} holds another recipe" in capsys.readouterr().err
