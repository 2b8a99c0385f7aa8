"""Audiovision-MNIST as SMIL's code builds it (mengmenm/SMIL ``src/dataset/soundmnist.py``), read from disk.

Layout under ``root`` (``--dataset-param root=PATH`` or the MISSBENCH_AVMNIST_ROOT environment variable):

    mnist/train/<digit>/<n>.png        MNIST training images exported per digit (SMIL's utils/mnist_to_image.py)
    mnist/test/<digit>/<n>.png         MNIST test images
    sound_450/train/<digit>/<digit>_<speaker>_<index>.wav   Free Spoken Digit recordings, index >= 15
    sound_450/test/<digit>/<digit>_<speaker>_<index>.wav    index < 15 (SMIL's utils/sound_train_test_split.py)

As SMIL: file names are sorted as strings; training pairs the first 105 images of each digit with
the digit's recordings, int(105 / 3) = 35 per speaker (jackson, then nicolas, then any other), in
that order; testing pairs the last 45 images of each digit of mnist/test with all 45 test recordings
of the digit. Image and recording are paired by position within a digit (no natural
correspondence): 1,050 + 450 = 1,500 samples. We carve the validation split from the training pairs:
the last ``n_val`` (15) of each digit's 105, so 900 / 150 / 450; SMIL has none and selects on test.

Audio: a ``<same name>.npy`` 20x20 MFCC map next to a wav is used when present; otherwise the map is
computed from the wav with SMIL's recipe (missbench/realdata/audio.py; the file's sample rate is ignored, as
SMIL's ``sr=8000``). Images: 28x28 greyscale, scaled to [-1, 1] (SMIL's Normalize(0.5, 0.5)); MFCC
maps are z-scored per coefficient with training statistics (SMIL feeds raw values). SMIL's
unfinished PCA degradation script (utils/image_pca.py) is not applied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from missbench.core.dataset import ClassificationDataset, Samples
from missbench.core.params import Between

ENV = "MISSBENCH_AVMNIST_ROOT"
DIGITS = [str(d) for d in range(10)]


def _files(folder: Path, suffix: str) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset 'avmnist': missing folder {folder}")
    return sorted((p for p in folder.iterdir() if p.suffix == suffix), key=lambda p: p.name)


def read_image(path: Path) -> np.ndarray:
    """A 28x28 greyscale PNG scaled to [-1, 1]; a clear error naming the file otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L"), np.float32)
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"{path}: cannot read as an image ({e})") from None
    if arr.shape != (28, 28):
        raise ValueError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]}; expected 28x28 (MNIST)")
    return arr / 127.5 - 1.0


def read_audio(wav: Path) -> np.ndarray:
    """The 20x20 MFCC map of a recording: ``<stem>.npy`` if present, else computed from the wav."""
    npy = wav.with_suffix(".npy")
    if npy.exists():
        try:
            arr = np.load(npy)
        except (OSError, ValueError) as e:
            raise ValueError(f"{npy}: cannot read as a numpy array ({e})") from None
        if arr.shape != (20, 20):
            raise ValueError(f"{npy}: MFCC map has shape {arr.shape}; expected (20, 20)")
        return arr.astype(np.float32)
    from missbench.realdata.audio import read_wav, smil_mfcc  # scipy: imported on use, so listing the plugins stays fast

    return smil_mfcc(read_wav(wav)[0])


def _speaker(path: Path) -> str:
    parts = path.stem.split("_")
    if len(parts) != 3 or not parts[2].isdigit():
        raise ValueError(f"{path}: expected a Free Spoken Digit name <digit>_<speaker>_<index>.wav")
    return parts[1]


class AVMNIST(ClassificationDataset):
    name = "avmnist"
    modalities = ("image", "audio")
    n_classes = 10
    description = "Audiovision-MNIST in SMIL's layout (MNIST PNGs + Free Spoken Digit wavs, 20x20 MFCC); needs root="
    env = ENV
    defaults: ClassVar[dict[str, Any]] = {"root": None, "per_class_train": 105, "n_val": 15, "per_class_test": 45}
    #: Where the files lie: moving them changes no model or score.
    location_params: ClassVar[tuple[str, ...]] = ("root",)
    constraints: ClassVar[dict[str, Between]] = {
        "per_class_train": Between(1, integer=True), "n_val": Between(0, integer=True), "per_class_test": Between(1, integer=True)}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.params["n_val"] >= self.params["per_class_train"]:
            raise ValueError(f"dataset 'avmnist': n_val {self.params['n_val']} must be below per_class_train={self.params['per_class_train']}")

    def inputs(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        return {"image": ("image", (1, 28, 28)), "audio": ("spectrogram", (1, 20, 20))}

    def pairs(self, split: str) -> list[tuple[Path, Path, int]]:
        """(image, recording, digit) in SMIL's order for 'train' (all 105 per digit) or 'test'."""
        root, n_train, n_test = self.root(), int(self.params["per_class_train"]), int(self.params["per_class_test"])
        out = []
        for digit in DIGITS:
            images = _files(root / "mnist" / split / digit, ".png")
            sounds = _files(root / "sound_450" / split / digit, ".wav")
            need = n_train if split == "train" else n_test
            if len(images) < need:
                raise ValueError(f"dataset 'avmnist': {root / 'mnist' / split / digit} has {len(images)} PNG files; expected at least {need}")
            if split == "train":
                images = images[:need]
                per_speaker = need // 3
                by = {"jackson": [], "nicolas": [], "other": []}
                for s in sounds:
                    key = _speaker(s) if _speaker(s) in ("jackson", "nicolas") else "other"
                    if len(by[key]) < per_speaker:
                        by[key].append(s)
                sounds = by["jackson"] + by["nicolas"] + by["other"]
            else:
                images = images[len(images) - need:]
                for s in sounds:
                    _speaker(s)
            if len(sounds) != need:
                raise ValueError(f"dataset 'avmnist': {root / 'sound_450' / split / digit} gives {len(sounds)} recordings "
                                 f"for {split}; expected {need} ({need // 3} per speaker for train)")
            out += [(img, snd, int(digit)) for img, snd in zip(images, sounds)]
        return out

    def build(self) -> dict[str, Samples]:
        from missbench.realdata.audio import standardise  # scipy: imported on use, so listing the plugins stays fast

        n_val, n_train = int(self.params["n_val"]), int(self.params["per_class_train"])
        train = self.pairs("train")
        groups = {
            "train": [p for k, p in enumerate(train) if k % n_train < n_train - n_val],
            "val": [p for k, p in enumerate(train) if k % n_train >= n_train - n_val],
            "test": self.pairs("test"),
        }
        out = {}
        for split, pairs in groups.items():
            out[split] = Samples(
                ids=[f"{split}_{d}_{img.stem}_{snd.stem}" for img, snd, d in pairs],
                x=[np.asarray([read_image(i) for i, _, _ in pairs], np.float32).reshape(-1, 1, 28, 28),
                   np.asarray([read_audio(s) for _, s, _ in pairs], np.float32).reshape(-1, 1, 20, 20)],
                y=np.asarray([d for *_, d in pairs], np.int64),
            )
        standardise(out, 1)
        return out
