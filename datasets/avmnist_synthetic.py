"""Audio-visual digits, SYNTHETIC: real handwritten digit images with synthesised spoken-digit audio.

The offline stand-in for SMIL's Audiovision-MNIST (datasets/avmnist.py reads the real one).
- **Images are real** handwritten digits: scikit-learn's ``load_digits`` (UCI, 1,797 8x8 images
  with 17 grey levels), upsampled bilinearly to 28x28 (SMIL's LeNet input size), so they are
  blurrier than MNIST; Gaussian pixel noise (``image_noise``) keeps image-only accuracy below the
  pair's. Scaled to [-1, 1] as SMIL's ``Normalize(0.5, 0.5)``.
- **Audio is synthesised**, not recorded: each digit is a fixed sequence of three "phones" (formant
  triples, voiced or fricative, and relative durations, drawn once per digit from a fixed seed).
  Each sample gets a speaker (vocal-tract length factor and base pitch; 6 speakers shared by all
  splits, as FSDD's), pitch and formant jitter, a speaking rate, and background noise at a drawn
  SNR. The waveform (8 kHz) becomes SMIL's 20x20 MFCC map (missbench/realdata/audio.py), standardised per
  coefficient with training-split statistics (SMIL feeds the raw MFCC values; unit scale keeps a
  zero-filled missing input at the data mean).
- **Splits** as SMIL's code: 150 samples per digit, 1,500 in all; 105 per digit for training and
  45 for testing (1,050 / 450), with a validation split of 15 per digit carved from the 105, so
  900 train / 150 val / 450 test by default. Images are drawn without repetition per digit;
  image and audio of a sample share only the label (SMIL pairs them by position within a digit).

Measured (tests/test_avmnist_synthetic.py, logistic regression on the default splits): audio
alone and image alone are each well above chance (10%) and below the pair; the figures are in
docs and the test asserts the ordering, not numbers.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any, ClassVar

import numpy as np

from missbench.core.dataset import ClassificationDataset, Samples
from missbench.core.params import Between

N_CLASSES = 10
#: The digit templates' seed: the "words" are part of the data set's definition, not of a run.
TEMPLATE_SEED = 20210101
N_SPEAKERS = 6


@cache
def _templates() -> list[list[tuple[np.ndarray, bool, float]]]:
    """Per digit: three phones (formants F1-F3 in Hz, voiced?, relative duration)."""
    rng = np.random.default_rng(TEMPLATE_SEED)
    out = []
    for _ in range(N_CLASSES):
        phones = []
        for _ in range(3):
            f = np.array([rng.uniform(250, 900), rng.uniform(900, 2300), rng.uniform(2300, 3600)])
            phones.append((f, bool(rng.random() > 0.2), float(rng.uniform(0.6, 1.4))))
        out.append(phones)
    return out


def _speakers(rng: np.random.Generator) -> list[tuple[float, float]]:
    """(vocal-tract factor, base pitch in Hz) per speaker."""
    return [(float(rng.uniform(0.85, 1.18)), float(rng.uniform(95, 240))) for _ in range(N_SPEAKERS)]


def synth_word(digit: int, rng: np.random.Generator, speaker: tuple[float, float], noise_db: tuple[float, float]) -> np.ndarray:
    """One spoken-digit-like waveform at 8 kHz (float32)."""
    from missbench.realdata.audio import SR  # scipy: imported on use, so listing the plugins stays fast

    tract, pitch = speaker
    phones = _templates()[digit]
    rate = rng.uniform(0.8, 1.25)
    durs = np.array([d for *_, d in phones]) * 0.17 * rate
    n = int(durs.sum() * SR)
    t = np.arange(n) / SR
    bounds = np.concatenate([[0], np.cumsum(durs)])
    centres = (bounds[:-1] + bounds[1:]) / 2
    formants = np.stack([f * tract * rng.uniform(0.93, 1.07, 3) for f, *_ in phones])  # 3 phones x 3
    track = np.stack([np.interp(t, centres, formants[:, j]) for j in range(3)], 1)  # n x 3
    which = np.clip(np.searchsorted(bounds, t, side="right") - 1, 0, 2)
    voiced = np.array([v for _, v, _ in phones])[which]
    f0 = pitch * rng.uniform(0.9, 1.1) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    # Harmonics of f0 weighted by the formant resonances; the slowly varying gains are computed on a
    # coarse time grid (every 32 samples) and interpolated.
    bw = np.array([90.0, 120.0, 180.0])
    k = np.arange(1, int(3900 // pitch) + 1, dtype=np.float32)[:, None]
    coarse = np.arange(0, n, 32)
    fk = k[:, :, None] * f0[coarse][None, :, None]  # K x T x 1
    gain = (1 / (1 + ((fk - track[coarse][None]) / bw) ** 2)).sum(2) / np.sqrt(k)  # K x T
    pos = np.arange(n) / 32
    i0 = np.minimum(pos.astype(int), len(coarse) - 1)
    i1 = np.minimum(i0 + 1, len(coarse) - 1)
    w = (pos - i0).astype(np.float32)
    gain = gain.astype(np.float32)
    gains = gain[:, i0] * (1 - w) + gain[:, i1] * w
    wave = (gains * np.sin(k * phase.astype(np.float32) + rng.uniform(0, 2 * np.pi, (len(k), 1)).astype(np.float32))).sum(0)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SR)
    # Fricatives: noise shaped by the phone's upper formants.
    hiss = np.fft.irfft(spectrum * (1 / (1 + ((freqs[:, None] - formants[:, 1:].mean(0)) / 400) ** 2)).sum(1), n)
    wave = np.where(voiced, wave, 3 * hiss / (hiss.std() + 1e-8))
    wave *= np.sin(np.pi * np.clip(t / t[-1], 0, 1)) ** 0.5  # onset and decay
    wave /= np.abs(wave).max() + 1e-8
    snr = rng.uniform(*noise_db)
    wave += rng.standard_normal(n) * wave.std() / 10 ** (snr / 20)
    return (0.5 * wave / (np.abs(wave).max() + 1e-8)).astype(np.float32)


@lru_cache(maxsize=4)
def _build(seed: int, n_train: int, n_val: int, n_test: int, image_noise: float, snr_low: float, snr_high: float) -> dict[str, Samples]:
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    from missbench.realdata.audio import smil_mfcc, standardise

    digits = load_digits()
    rng = np.random.default_rng(seed)
    speakers = _speakers(np.random.default_rng([TEMPLATE_SEED, 1]))
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    need = sum(sizes.values())
    picked: dict[str, list[tuple[int, int]]] = {s: [] for s in sizes}
    for c in range(N_CLASSES):
        members = rng.permutation(np.flatnonzero(digits.target == c))
        if len(members) < need:
            raise ValueError(f"dataset 'avmnist_synthetic': digit {c} has {len(members)} images in load_digits; "
                             f"n_train + n_val + n_test per digit is {need}")
        start = 0
        for split, k in sizes.items():
            picked[split] += [(c, int(i)) for i in members[start:start + k]]
            start += k
    out = {}
    for split, items in picked.items():
        srng = np.random.default_rng([seed, list(sizes).index(split) + 1])
        images, audio, labels = [], [], []
        for c, i in items:
            img = zoom(digits.images[i] / 16.0, 28 / 8, order=1)
            img = np.clip(img + srng.normal(0, image_noise, img.shape), 0, 1)
            images.append(img * 2 - 1)
            speaker = speakers[int(srng.integers(N_SPEAKERS))]
            audio.append(smil_mfcc(synth_word(c, srng, speaker, (snr_low, snr_high))))
            labels.append(c)
        out[split] = Samples(
            ids=[f"avs_{split}{k:04d}" for k in range(len(items))],
            x=[np.asarray(images, np.float32)[:, None], np.asarray(audio, np.float32)[:, None]],
            y=np.asarray(labels, np.int64),
        )
    standardise(out, 1)
    return out


class AVMNISTSynthetic(ClassificationDataset):
    name = "avmnist_synthetic"
    modalities = ("image", "audio")
    n_classes = N_CLASSES
    description = "SYNTHETIC audio (spoken-digit-like, 20x20 MFCC) + real load_digits images (28x28); SMIL's 1,050/450 split"
    defaults: ClassVar[dict[str, Any]] = {
        "seed": 0,
        "n_train": 90,  # per digit; + n_val = SMIL's 105 training samples per digit
        "n_val": 15,
        "n_test": 45,
        "image_noise": 0.35,
        "snr_low": -6.0,  # dB, background noise of the audio
        "snr_high": 6.0,
    }
    constraints: ClassVar[dict[str, Between]] = {
        "seed": Between(0, integer=True), "n_train": Between(1, integer=True), "n_val": Between(0, integer=True),
        "n_test": Between(1, integer=True), "image_noise": Between(0)}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.params["snr_low"] > self.params["snr_high"]:
            raise ValueError(f"dataset {self.name!r}: snr_low {self.params['snr_low']} is above snr_high {self.params['snr_high']}")

    def inputs(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        return {"image": ("image", (1, 28, 28)), "audio": ("spectrogram", (1, 20, 20))}

    def build(self) -> dict[str, Samples]:
        p = self.params
        return _build(int(p["seed"]), int(p["n_train"]), int(p["n_val"]), int(p["n_test"]), float(p["image_noise"]),
                      float(p["snr_low"]), float(p["snr_high"]))
