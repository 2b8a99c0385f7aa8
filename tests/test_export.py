"""Protocol B end to end on tiny NIfTI cases: train on every training case, export the validation
cases as label maps in their original geometry."""

import json

import nibabel as nib
import numpy as np
import pytest
from brats_files import AFFINE, SHAPE, SPACING, write_set

from missbench.experiment import registry
from missbench.cli import main
from missbench.realdata.export import et_postprocess
from missbench.store.run_folder import ModelFolder, load_rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("b")
    write_set(tmp / "train", tmp / "val")
    common = ["--data-root", str(tmp / "train"), "--dataset-param", f"val_root={tmp / 'val'}",
              "--dataset-param", f"cache={tmp / 'cache'}", "--dataset-param", "crop=8"]
    assert main(["prepare", "--protocol", "brats2018_b", "--budget", "smoke", "--no-progress", *common]) == 0
    assert main(["--protocol", "brats2018_b", "--budget", "smoke", "--methods", "zero_fill", "--param", "zero_fill.width=2",
                 "--param", "zero_fill.depth=2", "--no-progress", "--threads", "1", "--out", str(tmp / "sweep"), *common]) == 0
    return tmp


def test_protocol_b_trains_on_every_case_and_scores_nothing_locally(trained):
    run = next(p for p in (trained / "sweep").iterdir() if p.is_dir())
    (score,) = ModelFolder(run).scores()
    assert ModelFolder(run).spec().dataset_params["split"] == "all" and score.spec().metric["empty"] == "brats"
    assert load_rows(trained / "sweep").empty
    assert score.meta()["n_test_cases"] == 0


def test_export_writes_original_geometry_and_labels_and_resumes(trained, capsys):
    out = trained / "export"
    assert main(["export", str(trained / "sweep"), "--out", str(out), "--threads", "1", "--subsets", "T1c,FLAIR+T1+T1c+T2",
                 "--et-postprocess", "--no-progress"]) == 0
    run_out = next(out.iterdir())
    record = json.loads((run_out / "export.json").read_text())
    assert record["et_postprocess"] is True and record["et_threshold"] == 500 and record["subsets"] == ["T1c", "FLAIR+T1+T1c+T2"]
    files = sorted(run_out.rglob("*.nii.gz"))
    assert [f.relative_to(run_out).as_posix() for f in files] == [
        "FLAIR+T1+T1c+T2/Brats18_V1_1.nii.gz", "FLAIR+T1+T1c+T2/Brats18_V2_1.nii.gz", "T1c/Brats18_V1_1.nii.gz", "T1c/Brats18_V2_1.nii.gz"]
    cases = registry.dataset_class("brats2018")(**record["dataset_params"])
    for f in files:
        img = nib.load(f)
        data = np.asarray(img.dataobj)
        assert img.shape == SHAPE and np.allclose(img.affine, AFFINE) and img.header.get_zooms() == pytest.approx(SPACING)
        assert set(np.unique(data)) <= {0, 1, 2, 4} and data.dtype == np.uint8
        (x0, x1), (y0, y1), (z0, z1) = cases.load(f.name[: -len(".nii.gz")]).info["crop_box"]
        outside = np.ones(SHAPE, bool)
        outside[x0:x1, y0:y1, z0:z1] = False
        assert outside.any() and not data[outside].any()  # pasted into the crop box of the original grid
    before = {f: f.stat().st_mtime_ns for f in files}
    assert main(["export", str(trained / "sweep"), "--out", str(out), "--subsets", "T1c,FLAIR+T1+T1c+T2",
                 "--et-postprocess", "--no-progress"]) == 0
    assert before == {f: f.stat().st_mtime_ns for f in files}  # nothing redone, nothing overwritten
    capsys.readouterr()
    assert main(["export", str(trained / "sweep"), "--out", str(out), "--subsets", "T1c,FLAIR+T1+T1c+T2", "--no-progress"]) == 2
    assert "other options" in capsys.readouterr().err
    assert before == {f: f.stat().st_mtime_ns for f in files}


def test_paste_back_reproduces_the_original_label_file(trained, tmp_path):
    ds = registry.dataset_class("brats2018")(root=str(trained / "train"), cache=str(trained / "cache"), crop=8, split="all")
    case = ds.load("Brats18_B_1")  # plain .nii, float images
    ds.write_label_map(case, case.target, tmp_path / "b.nii.gz")
    original = nib.load(trained / "train" / "HGG" / "Brats18_B_1" / "Brats18_B_1_seg.nii")
    again = nib.load(tmp_path / "b.nii.gz")
    np.testing.assert_array_equal(np.asarray(again.dataobj), np.asarray(original.dataobj))
    np.testing.assert_allclose(again.affine, original.affine)


def test_unfinished_or_unexportable_runs_are_refused(trained, tmp_path, capsys):
    run = next(p for p in (trained / "sweep").iterdir() if p.is_dir())
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "neither a finished model folder" in capsys.readouterr().err
    (run / "DONE").rename(run / "DONE.bak")
    try:
        assert main(["export", str(run), "--out", str(tmp_path / "o")]) == 2
        assert "has not finished" in capsys.readouterr().err
    finally:
        (run / "DONE.bak").rename(run / "DONE")
    assert not (tmp_path / "o").exists()


def test_et_postprocess_relabels_small_et_as_core():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:4, 2:4, 2:4] = 4
    labels[5, 5, 5] = 2
    small = et_postprocess(labels, 9)
    assert (small[2:4, 2:4, 2:4] == 1).all() and small[5, 5, 5] == 2 and (labels[2:4, 2:4, 2:4] == 4).all()
    assert (et_postprocess(labels, 8) == labels).all()


def test_exported_maps_rescore_to_the_rows_the_run_scored(tmp_path):
    """Export predicts as the run's scoring predicts (the model placed alike, channels-last included): the maps,
    pasted into the original grid and scored against the original label files, give the run's rows exactly
    (they differed in 2 of 480 rows, HD95 by 0.0043 mm, when export placed the model otherwise)."""
    from brats_files import write_lists

    from missbench.core.metrics import score_case

    ids = write_set(tmp_path / "train")
    lists = write_lists(tmp_path / "lists", ids["train"][:4], [], ids["train"][4:])
    data = ["--data-root", str(tmp_path / "train"), "--dataset-param", f"cache={tmp_path / 'cache'}",
            "--dataset-param", f"split={lists}", "--dataset-param", "crop=8"]
    assert main(["prepare", "--protocol", "brats2018_a", "--budget", "smoke", "--no-progress", *data]) == 0
    assert main(["--protocol", "brats2018_a", "--budget", "smoke", "--methods", "zero_fill", "--no-progress", "--threads", "1",
                 "--out", str(tmp_path / "sweep"), *data]) == 0
    assert main(["export", str(tmp_path / "sweep"), "--out", str(tmp_path / "maps"), "--subsets", "all", "--no-progress",
                 "--threads", "1"]) == 0
    rows = load_rows(tmp_path / "sweep")
    subsets = sorted(set(rows.eval_subset))
    policy = rows.iloc[0]
    compared = 0
    for subset in subsets:
        for case in ids["train"][4:]:
            exported = next((tmp_path / "maps").glob(f"*/{subset}/{case}.nii.gz"))
            original = next((tmp_path / "train").glob(f"*/{case}/{case}_seg.nii*"))
            pred, ref = (np.asarray(nib.load(f).dataobj) for f in (exported, original))
            spacing = tuple(round(float(z), 6) for z in nib.load(original).header.get_zooms())  # as the cache records it
            again = score_case(pred, ref, spacing, policy.empty_policy, int(policy.et_threshold),
                               policy.hd95_definition)
            scored = rows[(rows.case_id == case) & (rows.eval_subset == subset)].set_index(["region", "metric"]).value
            for row in again:
                assert row["value"] == pytest.approx(scored[row["region"], row["metric"]], abs=1e-9, nan_ok=True), (case, subset, row)
                compared += 1
    assert compared == 15 * 2 * 8
