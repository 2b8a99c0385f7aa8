"""Training patches as each paper's code draws them: one named pipeline per code base, chosen by the
training setting ``sampler`` (missbench/core/training.py; a protocol's ``training:`` block sets it for
every method of a comparison, and it is part of every model's identity).

Axes: a case is M x D x H x W, D the NIfTI file's third axis and H, W its first and second (the layout
of ShaSpec's BraTSDataSet.py after ``transpose((0, 3, 1, 2))``; RFNet's and mmFormer's arrays are
H x W x D x M, so their axis k is named here by its letter). Every pipeline returns a patch of exactly
the budget's size (volumes smaller than the patch are zero-padded at the end, the harness's rule; the
official loaders would hand over a smaller array).

``shaspec``: github.com/billhhh/ShaSpec at 081fe7a1e40d6bbc0736dc93e779a0a5a439d091, BraTSDataSet.py
  ``BraTSDataSet.__getitem__`` ("locate bbx with scale", the one train_SS.py uses) with
  ``locate_bbx_wScale``, then the batch-level ``MirrorTransform`` of ``my_collate``:
  1. with p 0.5 the crop size is the patch times U(0.9, 1.1), truncated (``int``), else the patch;
  2. with p 0.5 one region is drawn uniformly among ET, WT and TC (``id2trainId``'s channels) and the
     crop is centred on a uniformly drawn voxel of it (``c - s//2`` to ``c + s//2``, shifted back
     inside the volume where it sticks out, then clipped); otherwise, or when that region is empty, a
     uniform crop with start in [0, D - s] along D, [15, H - 15 - s] along H and [10, W - 10 - s]
     along W (a margin is reduced to what the volume leaves, where the code's would leave no start);
  3. mirroring: none with p 0.3, else one of the seven axis combinations with p 0.1 each (W; H; D;
     H+W; D+W; D+H; D+H+W, in the code's order of ``np.random.rand`` thresholds);
  4. a scaled crop is resized to the patch as skimage's ``resize`` (0.17.2, the code's pin): image
     linear (order 1), labels nearest (order 0), pixel centres aligned (`_resize`; on an enlarged crop's
     outermost voxel layer the edge value is repeated where skimage reads its ``cval`` 0 beyond the edge);
     skimage's anti-aliasing at these factors (sigma = (factor - 1) / 2 <= 0.05, a zero-radius kernel)
     changes nothing, and its ``clip`` none (linear interpolation stays within the input's range);
  5. ``my_collate`` (train_SS.py passes it to the DataLoader) runs batchgenerators 0.21's transforms on
     each batch; of them the last, ``MirrorTransform(axes=(0, 1, 2))``, is reproduced: each axis
     flipped with p 0.5 (``augment_mirroring``), which makes the mirroring of steps 3 and 5 together
     uniform over the eight combinations. The others are **not** reproduced: ``SpatialTransform``
     (elastic deformation alpha 0-900 / sigma 9-13, rotation +-15 degrees per axis, scaling 0.85-1.25,
     each with p 0.2 per sample), Gaussian noise (p 0.1), Gaussian blur (p 0.2), multiplicative (p 0.15)
     and additive (p 0.15) brightness, contrast (p 0.15), simulated low resolution (p 0.25) and gamma
     (p 0.15) (BraTSDataSet.py ``get_train_transform``).
``rfnet``: github.com/dyh127/RFNet at 1e475fa5de4ac3f41f8de3d3102bb8b28383c2c4, train.py line 45
  (``Compose([RandCrop3D((80,80,80)), RandomRotion(10), RandomIntensityChange((0.1,0.1)),
  RandomFlip(0), ...])``) with data/transforms.py:
  1. a uniform crop, start in [0, size - patch] per axis (``RandCrop3D``; no foreground oversampling);
  2. a rotation by an integer angle in [-10, 9] degrees (``np.random.randint(-10, 10)``) in one of the
     planes W-H, D-W, D-H drawn uniformly (the code's axes (1, 0), (2, 1), (2, 0) of H x W x D),
     nearest neighbour, same shape; image corners -1, label corners 0 (the code's cval -1 cast into
     its uint8 label array);
  3. per channel and per index along H (the code's factors have shape [1, H, 1, 1, C]): x * U(0.9,
     1.1) + U(-0.1, 0.1);
  4. each axis flipped with p 0.5.
  mmFormer's pipeline is this one: github.com/YaoZhang93/mmFormer at
  b18663adbfd0323656083e0470420c8c715c1782, mmformer/data/transforms.py is byte-identical to RFNet's and
  mmformer/train.py line 45 composes the same transforms, with a 128^3 crop (the budget's patch here).
``uniform``: a uniform crop as ``rfnet``'s step 1 and nothing else (the plain sampler; U-HeMIS and
  U-HVED's NiftyNet ``window_sampling = uniform``, without their random flips and +-10% scaling, which
  are not reproduced).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from missbench.core.dataset import Case

#: The pipelines, by the name ``TrainingDefaults.sampler`` takes.
SAMPLERS = ("shaspec", "rfnet", "uniform")
#: ShaSpec's random-crop margins along D, H, W (BraTSDataSet.py ``locate_bbx_wScale``).
SHASPEC_MARGINS = (0, 15, 10)
#: ShaSpec's regions in the order of its label channels (``id2trainId``: ET, WT, TC) and their labels.
SHASPEC_REGIONS = (("ET", (4,)), ("WT", (1, 2, 4)), ("TC", (1, 4)))
#: ShaSpec's mirroring: the upper thresholds of ``np.random.rand`` and the axes (D=0, H=1, W=2) each flips.
SHASPEC_MIRRORS = ((0.3, ()), (0.4, (2,)), (0.5, (1,)), (0.6, (0,)), (0.7, (1, 2)), (0.8, (0, 2)), (0.9, (0, 1)), (1.0, (0, 1, 2)))
#: RFNet's rotation planes in this layout (D=0, H=1, W=2): the code's (1, 0), (2, 1), (2, 0) of H x W x D.
RFNET_PLANES = ((2, 1), (0, 2), (0, 1))


@dataclass(frozen=True)
class Box:
    """The region of the volume a patch is cut from, ``start`` to ``stop`` per axis (D, H, W)."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    @property
    def centre(self) -> tuple[int, int, int]:
        return tuple(a + (b - a) // 2 for a, b in zip(self.start, self.stop))

    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))


class RegionIndex:
    """One case's ShaSpec regions as voxel lists: WT's voxels (N x 3, int32) and, for ET and TC, indices
    into them (a region's voxels are WT's at those indices): 12 bytes per WT voxel plus 4 per TC and ET voxel."""

    def __init__(self, target: np.ndarray) -> None:
        self.wt = np.argwhere(target > 0).astype(np.int32)
        labels = np.asarray(target)[tuple(self.wt.T)] if len(self.wt) else np.zeros(0, target.dtype)
        self.subsets = {name: np.flatnonzero(np.isin(labels, labs)).astype(np.int32) for name, labs in SHASPEC_REGIONS
                        if name != "WT"}

    def size(self, region: str) -> int:
        return len(self.wt) if region == "WT" else len(self.subsets[region])

    def voxel(self, region: str, k: int) -> np.ndarray:
        return self.wt[k] if region == "WT" else self.wt[self.subsets[region][k]]


def uniform_start(shape: tuple[int, ...], size: tuple[int, ...], rng: np.random.Generator,
                  margins: tuple[int, ...] = (0, 0, 0)) -> tuple[int, ...]:
    """A crop start drawn uniformly per axis in [m, s - size - m] (``random.randint``'s closed range); a margin is
    reduced to half the room the axis leaves, and an axis no longer than the crop starts at 0."""
    out = []
    for s, p, m in zip(shape, size, margins):
        room = s - p
        if room <= 0:
            out.append(0)
            continue
        m = min(m, room // 2)
        out.append(int(rng.integers(m, room - m + 1)))
    return tuple(out)


def shaspec_box(shape: tuple[int, ...], regions: RegionIndex, size: tuple[int, ...], rng: np.random.Generator) -> Box:
    """ShaSpec's crop of ``size`` (BraTSDataSet.py ``locate_bbx_wScale``): centred on a voxel of a drawn region
    with p 0.5, else uniform within the margins."""
    if rng.random() < 0.5:
        name = SHASPEC_REGIONS[int(rng.integers(len(SHASPEC_REGIONS)))][0]
        n = regions.size(name)
        if n:
            centre = regions.voxel(name, int(rng.integers(n)))
            start, stop = [], []
            for c, p, s in zip(centre.tolist(), size, shape):
                lo, hi = c - p // 2, c + p // 2
                if lo < 0:
                    lo, hi = 0, hi - lo
                if hi > s:
                    lo, hi = lo - (hi - s), s
                start.append(max(lo, 0))
                stop.append(min(hi, s))
            return Box(tuple(start), tuple(stop))
    start = uniform_start(shape, size, rng, SHASPEC_MARGINS)
    return Box(start, tuple(min(a + p, s) for a, p, s in zip(start, size, shape)))


def _flip(image: np.ndarray, target: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    if not axes:
        return image, target
    return np.flip(image, tuple(a + 1 for a in axes)), np.flip(target, axes)


def _resize(image: np.ndarray, target: np.ndarray, patch: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """skimage 0.17's ``resize`` as ShaSpec calls it, pixel centres aligned: the image linear (trilinear,
    ``align_corners=False``), the labels nearest (``nearest-exact``, skimage's order 0). Equal to scipy's
    ``ndimage.zoom(..., grid_mode=True)`` inside; on an enlarged crop's outermost voxel layer the edge value is
    repeated where skimage's ``mode='constant'`` reads 0 beyond the edge. torch: 15x faster than scipy here."""
    import torch
    import torch.nn.functional as F

    img = F.interpolate(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None], size=tuple(patch),
                        mode="trilinear", align_corners=False)[0].numpy()
    tgt = F.interpolate(torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))[None, None], size=tuple(patch),
                        mode="nearest-exact")[0, 0].numpy().astype(target.dtype)
    return img, tgt


def _pad(image: np.ndarray, target: np.ndarray, patch: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    pad = [(0, max(p - s, 0)) for p, s in zip(patch, target.shape)]
    if not any(b for _, b in pad):
        return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(target)
    return np.pad(image, [(0, 0), *pad]).astype(np.float32, copy=False), np.pad(target, pad)


def sample_shaspec(case: Case, regions: RegionIndex, patch: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One patch by ShaSpec's pipeline (module docstring)."""
    scaled = rng.random() < 0.5
    size = tuple(int(p * rng.uniform(0.9, 1.1)) for p in patch) if scaled else tuple(patch)
    box = shaspec_box(case.target.shape, regions, size, rng)
    sl = box.slices()
    image, target = case.image[(slice(None), *sl)], case.target[sl]
    u = rng.random()
    image, target = _flip(image, target, next(axes for bound, axes in SHASPEC_MIRRORS if u <= bound))
    if scaled:
        image, target = _resize(image, target, patch)
    image, target = _pad(image, target, patch)
    image, target = _flip(image, target, tuple(a for a in range(3) if rng.random() < 0.5))  # my_collate's MirrorTransform
    return image, target


def sample_rfnet(case: Case, patch: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One patch by RFNet's (and mmFormer's) pipeline (module docstring)."""
    from scipy import ndimage

    shape = case.target.shape
    start = uniform_start(shape, patch, rng)
    sl = tuple(slice(a, a + p) for a, p in zip(start, patch))
    image, target = _pad(case.image[(slice(None), *sl)], case.target[sl], patch)
    plane = RFNET_PLANES[int(rng.integers(len(RFNET_PLANES)))]
    angle = int(rng.integers(-10, 10))
    if angle:
        image = np.stack([ndimage.rotate(c, angle, axes=plane, reshape=False, order=0, mode="constant", cval=-1.0) for c in image])
        target = ndimage.rotate(target, angle, axes=plane, reshape=False, order=0, mode="constant", cval=0)
    m, h = image.shape[0], image.shape[2]
    shift = rng.uniform(-0.1, 0.1, size=(m, 1, h, 1)).astype(np.float32)
    scale = rng.uniform(0.9, 1.1, size=(m, 1, h, 1)).astype(np.float32)
    image = image * scale + shift
    return _flip(image, target, tuple(a for a in range(3) if rng.random() < 0.5))


def sample_uniform(case: Case, patch: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One uniform crop, nothing else."""
    start = uniform_start(case.target.shape, patch, rng)
    sl = tuple(slice(a, a + p) for a, p in zip(start, patch))
    return _pad(case.image[(slice(None), *sl)], case.target[sl], patch)
