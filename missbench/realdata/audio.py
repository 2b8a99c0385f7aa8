"""Audio to MFCC maps as SMIL's ``utils/wav2mfcc.py`` makes them (shared by both avMNIST data sets).

SMIL's recipe: read the wav at its own rate (8 kHz for Free Spoken Digit), keep every third sample
(``wave[::3]``, no anti-aliasing filter), compute 20 MFCCs as librosa does with ``sr=8000`` and its
defaults (2,048-point FFT, hop 512, Hann window, centred frames with zero padding, 128 Slaney mel
bands up to 4 kHz, power in dB with ``top_db=80``, orthonormal DCT-II), then zero-pad or truncate
to 20 frames: a 20 x 20 map. Implemented with numpy and scipy, so librosa is not a dependency.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from scipy.fft import dct
from scipy.io import wavfile

SR = 8000
N_FFT, HOP, N_MELS = 2048, 512, 128
N_MFCC = FRAMES = 20
DECIMATE = 3


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the sample rate; a clear error naming the file on bad input."""
    try:
        rate, data = wavfile.read(path)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: cannot read as a WAV file ({e})") from None
    if data.size == 0:
        raise ValueError(f"{path}: the WAV file holds no samples")
    if data.ndim == 2:
        data = data.mean(1)
    if np.issubdtype(data.dtype, np.integer):
        data = data / float(np.iinfo(data.dtype).max + 1)
    return data.astype(np.float32), int(rate)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), (200.0 / 3) * m)


@cache
def mel_filterbank(sr: int = SR, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """n_mels x (1 + n_fft/2) triangular filters with Slaney area normalisation, as librosa.filters.mel."""
    fft_f = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    ramps = mel_f[:, None] - fft_f[None, :]
    fdiff = np.diff(mel_f)
    lower, upper = -ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]


def mfcc(wave: np.ndarray, sr: int = SR, n_mfcc: int = N_MFCC) -> np.ndarray:
    """n_mfcc x frames MFCCs with librosa's defaults (see the module docstring)."""
    y = np.pad(np.asarray(wave, np.float64), N_FFT // 2)
    frames = 1 + (len(y) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    power = np.abs(np.fft.rfft(y[idx] * window, axis=1)) ** 2
    mel = mel_filterbank(sr, N_FFT, N_MELS) @ power.T
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db, db.max() - 80.0)
    return dct(db, type=2, axis=0, norm="ortho")[:n_mfcc]


def smil_mfcc(wave: np.ndarray) -> np.ndarray:
    """SMIL's 20 x 20 map of one recording at 8 kHz: every third sample, MFCCs at sr=8000, 20 frames."""
    m = mfcc(np.asarray(wave)[::DECIMATE], SR, N_MFCC)[:, :FRAMES]
    return np.pad(m, ((0, 0), (0, FRAMES - m.shape[1]))).astype(np.float32)


def standardise(splits: dict, modality: int) -> None:
    """Z-score modality ``modality`` of every split per MFCC coefficient (row), with training-split
    statistics, in place. SMIL feeds raw MFCC values (ToTensor + Normalize(0.5, 0.5) does not rescale
    them); unit scale keeps a zero-filled missing input at the data mean, as for the images."""
    train = splits["train"].x[modality]
    mean = train.mean((0, 1, 3), keepdims=True)[0]
    std = train.std((0, 1, 3), keepdims=True)[0] + 1e-6
    for s in splits.values():
        s.x[modality] = ((s.x[modality] - mean) / std).astype(np.float32)
