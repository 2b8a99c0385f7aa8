import numpy as np
import pytest
import torch

from conftest import MODS, assert_shared_encoding_matches
from missbench.core.metrics import dice_and_hd95, score_case
from missbench.experiment.registry import method_class
from missbench.core.tasks.segmentation import labels_from_regions, regions_from_labels, sliding_window, window_starts


def test_shared_encoding_equals_one_pass_per_subset(task):
    torch.manual_seed(0)
    model = method_class("shaspec")(task, MODS, width=4, depth=2).eval()
    assert_shared_encoding_matches(model, atol=1e-5, rtol=1e-4)


def test_window_starts_cover_the_axis_with_a_flush_last_window():
    assert window_starts(48, 32, 0.5) == [0, 16]
    assert window_starts(50, 32, 0.5) == [0, 16, 18]
    assert window_starts(20, 32, 0.5) == [0]


def test_sliding_window_reassembles_a_voxelwise_prediction():
    volume = torch.arange(2 * 20 * 24 * 28, dtype=torch.float32).view(1, 2, 20, 24, 28)
    out = sliding_window(volume, (16, 16, 16), lambda w: [w[:, :1] * 2, w[:, 1:]])
    torch.testing.assert_close(out[0], volume[:, :1] * 2)
    torch.testing.assert_close(out[1], volume[:, 1:])
    small = sliding_window(volume[..., :8, :8, :8], (16, 16, 16), lambda w: [w])
    torch.testing.assert_close(small[0], volume[..., :8, :8, :8])


def test_region_and_label_conversions_round_trip():
    labels = torch.tensor([[0, 1, 2, 4]])
    regions = regions_from_labels(labels)
    assert regions[0].T.tolist() == [[0, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 1]]  # ET, TC, WT per voxel
    assert labels_from_regions(regions[0]).tolist() == [0, 1, 2, 4]


def test_dice_policies_and_hd95():
    a = np.zeros((10, 10, 10), bool)
    b = a.copy()
    assert dice_and_hd95(a, b, (1, 1, 1), "one") == (1.0, 0.0)
    assert all(np.isnan(dice_and_hd95(a, b, (1, 1, 1), "nan")))
    b[2:5, 2:5, 2:5] = True
    dice, hd = dice_and_hd95(a, b, (1, 1, 1))
    assert dice == 0 and hd == pytest.approx(np.sqrt(300))
    a[2:5, 2:5, 3:6] = True
    dice, hd = dice_and_hd95(a, b, (2, 1, 1))
    assert dice == pytest.approx(2 * 18 / 54) and hd == pytest.approx(1.0)
    with pytest.raises(ValueError, match="empty-region policy"):
        dice_and_hd95(a, b, (1, 1, 1), "zero")


def test_et_post_processing_removes_small_predicted_et():
    ref = np.zeros((8, 8, 8), np.uint8)
    pred = ref.copy()
    pred[1:3, 1:3, 1:3] = 4  # 8 voxels of spurious ET; the reference has none
    rows = score_case(pred, ref, (1, 1, 1), "one", et_threshold=10)
    scores = {(r["region"], r["metric"]): r["value"] for r in rows}
    sizes = {r["region"]: (r["ref_voxels"], r["pred_voxels"]) for r in rows}
    assert sizes == {"ET": (0, 8), "ETpp": (0, 0), "TC": (0, 8), "WT": (0, 8)}
    assert scores["ET", "dice"] == 0 and scores["ETpp", "dice"] == 1
    assert scores["TC", "dice"] == 0 and scores["WT", "dice"] == 0
