"""The real Audiovision-MNIST loader on small files written in SMIL's layout, and its errors."""

import re

import numpy as np
import pytest
from PIL import Image
from scipy.io import wavfile

from missbench.experiment import registry

AV = registry.dataset_class("avmnist")
SMALL = {"per_class_train": 3, "n_val": 1, "per_class_test": 2}


def write_layout(root, n_img=(5, 3)):
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), n_img):
        for d in range(10):
            folder = root / "mnist" / split / str(d)
            folder.mkdir(parents=True)
            for k in range(n):
                Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8)).save(folder / f"{k * 7}.png")
            sounds = root / "sound_450" / split / str(d)
            sounds.mkdir(parents=True)
            speakers = ("theo", "nicolas", "jackson") if split == "train" else ("jackson", "nicolas")
            for sp in speakers:
                for idx in ((15, 16) if split == "train" else (0,)):
                    wave = 0.3 * np.sin(np.arange(3000) * (0.05 + 0.01 * d)) * 32767
                    wavfile.write(sounds / f"{d}_{sp}_{idx}.wav", 8000, wave.astype(np.int16))
    np.save(root / "sound_450" / "test" / "3" / "3_jackson_0.npy", np.full((20, 20), 7.0))


def test_loads_smil_layout_with_smil_order(tmp_path):
    write_layout(tmp_path)
    ds = AV(root=str(tmp_path), **SMALL)
    tr, va, te = (ds.samples(s) for s in ("train", "val", "test"))
    assert (len(tr), len(va), len(te)) == (20, 10, 20)
    assert tr.x[0].shape == (20, 1, 28, 28) and te.x[1].shape == (20, 1, 20, 20)
    assert tr.x[0].min() >= -1 and tr.x[0].max() <= 1
    # Train: the first 3 images by string order (0, 14, 21), paired with jackson, nicolas, theo (one each);
    # the last pair of each digit is validation. Test: the last 2 images (14, 7 sorted as "14" < "7").
    assert tr.ids[:2] == ["train_0_0_0_jackson_15", "train_0_14_0_nicolas_15"] and va.ids[0] == "val_0_21_0_theo_15"
    assert te.ids[:2] == ["test_0_14_0_jackson_0", "test_0_7_0_nicolas_0"]
    assert np.bincount(te.y).tolist() == [2] * 10
    # The .npy map replaces the wav's (before standardisation the whole map is 7).
    i = te.ids.index("test_3_14_3_jackson_0")
    assert np.ptp(te.x[1][i, 0], axis=1).max() < 1e-5


def test_root_from_the_environment(tmp_path, monkeypatch):
    write_layout(tmp_path)
    monkeypatch.setenv("MISSBENCH_AVMNIST_ROOT", str(tmp_path))
    assert len(AV(**SMALL).samples("test")) == 20


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: None, "no data folder"),
        (lambda r: (r / "mnist" / "test" / "4" / "14.png").write_bytes(b"not a png"), "14.png: cannot read as an image"),
        (lambda r: Image.new("L", (32, 28)).save(r / "mnist" / "test" / "4" / "14.png"), "expected 28x28"),
        (lambda r: (r / "sound_450" / "test" / "5" / "5_nicolas_0.wav").write_bytes(b"RIFFjunk"), "5_nicolas_0.wav: cannot read as a WAV"),
        (lambda r: np.save(r / "sound_450" / "test" / "3" / "3_jackson_0.npy", np.zeros((13, 20))), "expected (20, 20)"),
        (lambda r: [(r / "sound_450" / "train" / "2" / f"2_theo_{i}.wav").unlink() for i in (15, 16)],
         "gives 2 recordings for train; expected 3 (1 per speaker for train)"),
        (lambda r: (r / "sound_450" / "test" / "6" / "6_jackson_0.wav").rename(r / "sound_450" / "test" / "6" / "six.wav"),
         "six.wav: expected a Free Spoken Digit name"),
        (lambda r: [p.unlink() for p in (r / "mnist" / "train" / "9").iterdir()], "has 0 PNG files"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path, monkeypatch, damage, message):
    monkeypatch.delenv("MISSBENCH_AVMNIST_ROOT", raising=False)
    write_layout(tmp_path)
    damage(tmp_path)
    params = SMALL if message == "no data folder" else {"root": str(tmp_path), **SMALL}
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):
        AV(**params).samples("train")
    with pytest.raises(ValueError, match="is not a folder"):
        AV(root=str(tmp_path / "nosuch"), **SMALL).samples("train")


def test_cli_refuses_a_missing_folder_before_writing(tmp_path, capsys, monkeypatch):
    from missbench.cli import main

    monkeypatch.delenv("MISSBENCH_AVMNIST_ROOT", raising=False)
    args = ["--protocol", "audio_rate", "--dataset", "avmnist", "--methods", "zero_fill", "--out", str(tmp_path / "s")]
    assert main([*args, "--dataset-param", f"root={tmp_path / 'nosuch'}"]) == 2
    assert "is not a folder" in capsys.readouterr().err and not (tmp_path / "s").exists()
