"""The brats2018 data set: layouts, roots, splits, a smoke protocol-A run; the metric policies and
Gaussian window weighting it brings."""

import math
import shutil

import numpy as np
import pytest
import torch
from brats_files import write_case, write_lists, write_set

from missbench.experiment import registry
from missbench.cli import main
from missbench.core.metrics import BRATS_MAX_HD95, EMPTY_POLICIES, dice_and_hd95
from missbench.realdata.prepare import prepare
from missbench.experiment.protocol import ProtocolError, load_protocol
from missbench.store.run_folder import load_rows
from missbench.core.tasks.segmentation import gaussian_weights, sliding_window

Brats = registry.dataset_class("brats2018")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("brats")
    ids = write_set(tmp / "train")
    prepare(Brats.for_prepare(root=str(tmp / "train"), cache=str(tmp / "cache")), progress=False)
    return tmp, ids


def test_root_from_env_var_and_clear_errors_without_one(data, monkeypatch):
    tmp, ids = data
    monkeypatch.delenv("MISSBENCH_BRATS2018", raising=False)
    with pytest.raises(ValueError, match=r"--data-root DIR .* \$MISSBENCH_BRATS2018"):
        Brats(split="all")
    monkeypatch.setenv("MISSBENCH_BRATS2018", str(tmp / "train"))
    monkeypatch.setenv("MISSBENCH_CACHE", str(tmp / "cache"))
    ds = Brats(split="all")
    assert ds.case_ids("train") == sorted(ids["train"]) and ds.params["root"] is None  # run ids do not hold the path
    with pytest.raises(ValueError, match="split=all"):
        Brats()
    with pytest.raises(ValueError, match="not found"):
        Brats(root=str(tmp / "nowhere"), split="all")
    with pytest.raises(ValueError, match="recipe='nnunet': expected one of"):
        Brats(split="all", recipe="nnunet")


def test_unprepared_cases_are_refused_naming_the_prepare_command(data, tmp_path):
    tmp, _ = data
    with pytest.raises(ValueError, match=r"6 of 6 cases are not in the cache .* bench.py prepare --dataset brats2018"):
        Brats(root=str(tmp / "train"), cache=str(tmp_path / "empty"), split="all")


def test_flat_brats2020_layout_and_split_lists(tmp_path):
    for i, case in enumerate(["BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_003"]):
        write_case(tmp_path / "train", case, None, seed=i)
    (tmp_path / "train" / "name_mapping.csv").write_text("not a case\n")  # files beside cases are ignored
    ds = Brats.for_prepare(root=str(tmp_path / "train"), cache=str(tmp_path / "cache"),
                           split=str(write_lists(tmp_path / "l", ["BraTS20_Training_001"], ["BraTS20_Training_002"], ["BraTS20_Training_003"])))
    assert [ds.case_ids(s) for s in ("train", "val", "test", "export")] == [
        ["BraTS20_Training_001"], ["BraTS20_Training_002"], ["BraTS20_Training_003"], ["BraTS20_Training_003"]]
    assert ds.cases["BraTS20_Training_001"].grade is None


def test_smoke_protocol_a_run_scores_every_subset_with_the_rfnet_policy(data, tmp_path, capsys):
    tmp, ids = data
    lists = write_lists(tmp_path / "lists", ids["train"][:4], ids["train"][4:5], ids["train"][5:])
    args = ["--protocol", "brats2018_a", "--budget", "smoke", "--methods", "zero_fill", "--param", "zero_fill.width=2",
            "--param", "zero_fill.depth=2", "--data-root", str(tmp / "train"), "--dataset-param", f"cache={tmp / 'cache'}",
            "--dataset-param", f"split={lists}", "--out", str(tmp_path / "sweep"), "--no-progress", "--threads", "1"]
    assert main(args) == 0
    rows = load_rows(tmp_path / "sweep")
    assert set(rows.case_id) == {"Brats18_F_1"} and rows.eval_subset.nunique() == 15
    assert set(rows.empty_policy) == {"rfnet"} and set(rows.et_threshold) == {500}
    assert rows.value[rows.metric == "dice"].between(0, 1).all()
    assert main(args) == 0 and "skipped" in capsys.readouterr().out


def test_protocol_files_validate_policy_and_window(tmp_path):
    a = load_protocol(registry.protocol_path("brats2018_a"))
    b = load_protocol(registry.protocol_path("brats2018_b"))
    assert a.metric["empty"] == "rfnet" and b.metric["empty"] == "brats"
    assert b.budget("paper")[2] == {"split": "all", "recipe": "shaspec"} and b.budget("paper")[1].patch == (80, 160, 160)
    assert b.subsets == a.subsets and len(a.subsets) == 15
    for key, value, msg in [("empty", "zero", "metric.empty"), ("window", "hann", "metric.window")]:
        bad = tmp_path / f"{key}.yaml"
        bad.write_text(f"inherit: {registry.protocol_path('brats2018_a')}\nmetric: {{{key}: {value}}}\n")
        with pytest.raises(ProtocolError, match=msg):
            load_protocol(bad)


@pytest.mark.parametrize("policy, both, one_hd, smooth_dice", [
    ("one", (1.0, 0.0), "diag", 0.5), ("nan", (math.nan, math.nan), "diag", 0.5),
    ("rfnet", (1.0, 0.0), BRATS_MAX_HD95, (2 * 4 + 1e-8) / (16 + 1e-8)), ("shaspec", (0.0, 0.0), BRATS_MAX_HD95, 8 / 17),
    ("nnunet", (math.nan, math.nan), BRATS_MAX_HD95, 0.5), ("brats", (1.0, 0.0), BRATS_MAX_HD95, 0.5),
])
def test_empty_region_policies(policy, both, one_hd, smooth_dice):
    assert policy in EMPTY_POLICIES
    empty = np.zeros((4, 5, 6), bool)
    np.testing.assert_equal(dice_and_hd95(empty, empty, (1, 1, 2), policy), both)
    some = empty.copy()
    some[1, 1:3, 1:3] = True  # 4 voxels
    dice, hd = dice_and_hd95(some, empty, (1, 1, 2), policy)
    assert dice == pytest.approx(0, abs=1e-8) and hd == pytest.approx(math.sqrt(4**2 + 5**2 + 12**2) if one_hd == "diag" else one_hd)
    other = empty.copy()
    other[1:4, 1:3, 1:3] = True  # 12 voxels, 4 shared: Dice 8/16
    assert dice_and_hd95(some, other, (1, 1, 2), policy)[0] == pytest.approx(smooth_dice)


def test_gaussian_window_weighting():
    w = gaussian_weights((8, 8, 8))
    assert w.max() == 1 and w[4, 4, 4] == 1 and w.min() > 0 and w[0, 0, 0] < 1e-3
    volume = torch.arange(2 * 20 * 24 * 28, dtype=torch.float32).view(1, 2, 20, 24, 28)
    out = sliding_window(volume, (16, 16, 16), lambda x: [x], weighting="gaussian", batch_windows=3)
    torch.testing.assert_close(out[0], volume)  # voxel-wise predictions are reassembled exactly
    # Window-dependent predictions (each window predicts its own mean): the weighting matters.
    uniform, gauss = (sliding_window(volume, (16, 16, 16), lambda x: [x.mean((1, 2, 3, 4), keepdim=True).expand_as(x[:, :1])],
                                     weighting=wt)[0] for wt in ("uniform", "gaussian"))
    assert not torch.allclose(uniform, gauss)
    with pytest.raises(ValueError, match="window weighting"):
        sliding_window(volume, (16, 16, 16), lambda x: [x], weighting="hann")


def test_case_in_two_folders_is_refused(tmp_path):
    write_case(tmp_path / "train", "Brats18_X_1", "HGG")
    shutil.copytree(tmp_path / "train" / "HGG" / "Brats18_X_1", tmp_path / "train" / "LGG" / "Brats18_X_1")
    with pytest.raises(ValueError, match="Brats18_X_1 is in two folders"):
        Brats.for_prepare(root=str(tmp_path / "train"), cache=str(tmp_path / "c"))
