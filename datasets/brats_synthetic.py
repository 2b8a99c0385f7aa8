"""Synthetic BraTS-like brain tumour volumes: the default MissBench data set.

Why: the benchmark needs a data set that runs anywhere in seconds and still shows the
missing-modality pattern of real multi-parametric MRI. Every case here is generated on the fly
from ``(seed, index)``: a deformed brain with white matter, grey matter (cortical ribbon and deep
nuclei) and CSF (ventricles and a thin sulcal layer), and a glioma with irregular borders made by
thresholding smooth random fields: oedema (label 2) around a tumour core (label 1) that holds a
patchy, partly rim-like enhancing tumour (label 4; absent in about a fifth of cases, like
low-grade gliomas). Labels nest by construction: ET = {4} c TC = {1, 4} c WT = {1, 2, 4}.

The four modalities carry information the way real MRI does (relative intensities before
partial-volume blur, texture, bias field, Rician noise and a per-case scale; "core" is the
necrotic / non-enhancing core, label 1):

    tissue        FLAIR         T1            T1c                T2
    WM            medium        bright        bright             dark-medium
    GM            medium+       medium        medium             medium+
    CSF           dark          dark          dark               brightest
    oedema (2)    bright        slightly dark slightly dark      bright
    core (1)      bright        dark-ish      dark (necrosis)    bright
    ET (4)        = core        = core        strongly bright    = core

So: WT is best seen in FLAIR / T2; the core differs only slightly from oedema outside T1c (it is
hard without T1c); the enhancing tumour is invisible outside T1c (its intensity there is drawn
from the same distribution as the rest of the core) and its shape is not implied by the core's
outline. T1c also shows a few small healthy enhancing structures (vessels), so the brightest T1c
voxels are not always tumour, and some cases carry small unlabelled white-matter hyperintensities
(oedema-like in FLAIR / T2), so a bright FLAIR voxel is not always tumour either. Texture,
partial-volume blur (Gaussian, sigma 0.7-1 voxel), a smooth +-10-20% bias field, Rician noise and
per-case contrast jitter keep every region from being separable by one intensity threshold.
Each modality is finally z-scored over brain voxels (background stays 0), as the RFNet pipeline
does for real BraTS data.

Sizes (per case, drawn): WT is 2-10% of brain volume, TC 15-55% of WT, ET 12-70% of TC.
Generation takes ~0.12 s of one CPU core for a 64^3 case.

Case ids are ``syn0000``, ``syn0001``, ...: the first ``n_train`` are the training split, the
next ``n_val`` validation and the last ``n_test`` test. Nothing is read from disk.

Case attributes (for missing-not-at-random protocols, protocols/mnar.yaml): ``tumour_volume`` (every
segmentation data set's: the labelled voxels, 1 mm^3 each) and ``site``, an acquisition-site label
0..3 given round-robin by case index (case i is at site i mod 4), so every split holds every site.
The site is a label only: the images do not depend on it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, ClassVar

import numpy as np

from missbench.core.dataset import SPLITS, Case, Dataset
from missbench.core.params import Between

MODALITIES = ("FLAIR", "T1", "T1c", "T2")
#: Synthetic acquisition sites (the ``site`` case attribute).
N_SITES = 4

# Relative tissue intensities before blur, texture, bias, noise and scaling (columns in MODALITIES
# order). "core" is label 1 (necrotic / non-enhancing); ET (label 4) shares the core's values in
# FLAIR, T1 and T2 and differs only in T1c.
_CSF, _GM, _WM, _OED, _CORE, _ET = range(6)
_CONTRAST = np.array(
    [
        # FLAIR  T1    T1c   T2
        [0.22, 0.30, 0.30, 1.75],  # CSF
        [0.88, 0.64, 0.66, 0.88],  # GM
        [0.70, 0.90, 0.90, 0.66],  # WM
        [1.25, 0.67, 0.69, 1.30],  # oedema, at full strength (fades towards the border)
        [1.28, 0.63, 0.40, 1.36],  # core (necrotic / non-enhancing)
        [1.28, 0.63, 1.45, 1.36],  # enhancing tumour
    ],
    dtype=np.float32,
)
_T1C = MODALITIES.index("T1c")


def _gauss_basis(size: int, nodes: int, width: float) -> np.ndarray:
    """(size, nodes) Gaussian RBF weights: smooth interpolation from a coarse grid to voxels."""
    x = np.linspace(-1.0, 1.0, size, dtype=np.float64)
    # Nodes extend a little beyond the box so the field does not fade at the borders.
    c = np.linspace(-1.15, 1.15, nodes)
    h = (c[1] - c[0]) * width
    return np.exp(-0.5 * ((x[:, None] - c[None, :]) / h) ** 2).astype(np.float32)


def _smooth_fields(rng: np.random.Generator, k: int, size: int, nodes: int, width: float = 1.0) -> np.ndarray:
    """``k`` independent smooth random fields of shape (size,)*3, each zero-mean, unit-std.

    A coarse ``nodes``^3 grid of white noise is spread with separable Gaussian kernels; the number
    of nodes sets the spatial frequency (a few nodes: bias-like; many: texture).
    """
    b = _gauss_basis(size, nodes, width)
    g = rng.standard_normal((k, nodes, nodes, nodes), dtype=np.float32)
    f = np.einsum("ia,kabc->kibc", b, g, optimize=True)
    f = np.einsum("jb,kibc->kijc", b, f, optimize=True)
    f = np.einsum("kijc,lc->kijl", f, b, optimize=True)
    f -= f.mean(axis=(1, 2, 3), keepdims=True)
    f /= f.std(axis=(1, 2, 3), keepdims=True) + 1e-8
    return f


def generate_case(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate one case: ``image`` float32 (4, S, S, S) and ``target`` uint8 (S, S, S).

    Deterministic from ``(seed, index)`` (``np.random.default_rng([seed, index])``; no global RNG
    state). Image channels are in ``MODALITIES`` order, z-scored over brain voxels, 0 outside the
    brain; target labels are 0 background, 1 necrotic / non-enhancing core, 2 oedema, 4 enhancing.
    """
    from scipy import ndimage  # imported on use, so listing the plugins stays fast

    size = int(size)
    if size < 16:
        raise ValueError(f"brats_synthetic: size must be >= 16, got {size}")
    rng = np.random.default_rng([int(seed), int(index)])
    # Independent streams: scalar parameters, random fields / noise, and the tumour-centre search
    # (variable length). Scalars come from their own stream so a case keeps its identity (tumour
    # size, ET present or not, contrasts, ..) across volume sizes.
    prm, fld, loc = rng.spawn(3)
    S = size
    vox = 2.0 / (S - 1)  # one voxel in normalised [-1, 1] units
    ax = np.linspace(-1.0, 1.0, S, dtype=np.float32)
    # Axis 0: inferior-superior, axis 1: posterior-anterior, axis 2: left-right (hemispheres).
    z, y, x = ax[:, None, None], ax[None, :, None], ax[None, None, :]

    # Smooth random fields, by frequency band (drawn in a fixed order: determinism).
    low = _smooth_fields(fld, 4, S, 5)  # brain shape, ventricles, tumour shape, oedema profile
    mid = _smooth_fields(fld, 3, S, 9)  # gyri, uneven enhancement, healthy T1c vessels
    bias = _smooth_fields(fld, 4, S, 4, width=1.2)  # one bias field per modality
    tex = _smooth_fields(fld, 3, S, max(8, S // 3))  # tissue texture (healthy, tumour, oedema)
    fine = _smooth_fields(fld, 1, S, max(8, S // 3))[0]  # small healthy enhancing structures
    spots = _smooth_fields(fld, 1, S, max(8, S // 4))[0]  # healthy white-matter hyperintensities

    # ---- brain: a deformed super-ellipsoid, depth > 0 inside --------------------------------
    radii = prm.uniform([0.78, 0.86, 0.80], [0.88, 0.94, 0.90]).astype(np.float32)
    p = prm.uniform(2.0, 2.6)
    r_brain = (np.abs(z / radii[0]) ** p + np.abs(y / radii[1]) ** p + np.abs(x / radii[2]) ** p) ** (1.0 / p)
    depth = (1.0 + 0.05 * low[0]) - r_brain  # normalised radial depth below the surface
    depth *= radii.mean()  # roughly in [-1, 1] box units
    brain = depth > 0

    # ---- healthy tissues --------------------------------------------------------------------
    t_csf = prm.uniform(0.8, 1.4) * vox  # sulcal CSF thickness
    t_gm = prm.uniform(2.5, 3.5) * vox * (S / 64.0) ** 0.3  # cortical ribbon thickness
    gyri = mid[0]
    csf = brain & (depth < t_csf * (1.0 + 0.6 * np.clip(gyri, -1.5, 1.5)))
    # Sulci: CSF fingers reaching into the ribbon where the folding field is high.
    csf |= brain & (depth < t_csf + t_gm * 0.9) & (gyri > 1.1)
    gm = brain & ~csf & (depth < t_csf + t_gm * (1.0 + 0.35 * gyri))
    # Deep grey matter (thalami / basal ganglia): two blobs beside the ventricles.
    dz, dy, dx = prm.uniform(-0.08, 0.04), prm.uniform(-0.1, 0.1), prm.uniform(0.2, 0.26)
    rd = prm.uniform(0.11, 0.15)
    for s in (-1.0, 1.0):
        blob = ((z - dz) / rd) ** 2 + ((y - dy) / (1.3 * rd)) ** 2 + ((x - s * dx) / rd) ** 2
        gm |= brain & (blob < 1.0 + 0.3 * low[1])
    # Lateral ventricles: two elongated, slightly bent blobs near the centre.
    vs = prm.uniform(0.7, 1.3)
    vz, vx = prm.uniform(0.05, 0.15), prm.uniform(0.08, 0.12)
    for s in (-1.0, 1.0):
        bend = 0.15 * (y / 0.3) ** 2
        blob = ((z - vz + bend) / (0.09 * vs)) ** 2 + (y / (0.32 * vs**0.5)) ** 2 + ((x - s * vx) / (0.055 * vs)) ** 2
        vent = blob < 1.0 + 0.3 * low[1]
        csf |= brain & vent
        gm &= ~vent
    wm = brain & ~csf & ~gm

    # ---- tumour ---------------------------------------------------------------------------
    n_brain = int(brain.sum())
    wt_frac = float(np.exp(prm.uniform(np.log(0.02), np.log(0.10))))  # WT / brain volume
    r_wt = (3.0 * wt_frac * n_brain / (4.0 * np.pi)) ** (1.0 / 3.0) * vox  # normalised radius
    aniso = prm.uniform(0.8, 1.25, size=3).astype(np.float32)
    aniso /= np.prod(aniso) ** (1.0 / 3.0)
    side = prm.choice([-1.0, 1.0])
    for _ in range(50):  # off-centre in one hemisphere, well inside the brain
        c = np.array([loc.uniform(-0.35, 0.35), loc.uniform(-0.45, 0.45), side * loc.uniform(0.25, 0.5)])
        ci = np.clip(np.round((c + 1.0) / vox).astype(int), 0, S - 1)
        if depth[tuple(ci)] > 0.6 * r_wt + 3 * vox:
            break
    cz, cy, cx = c.astype(np.float32)
    rho = np.sqrt(((z - cz) / aniso[0]) ** 2 + ((y - cy) / aniso[1]) ** 2 + ((x - cx) / aniso[2]) ** 2)
    # Tumour-scale random fields: node spacing tied to the tumour radius, so borders are irregular
    # at the scale of the tumour itself (not spheres), whatever its size.
    n_t = int(np.clip(round(2.3 / (0.55 * r_wt)), 6, S // 2))
    tum = _smooth_fields(fld, 2, S, n_t)
    # Irregular whole-tumour region: normalised radius modulated by low- and tumour-scale fields,
    # cut at the level that gives exactly the drawn WT volume (tumour replaces tissue, not CSF).
    allowed = brain & ~csf
    wt_ratio = rho / (r_wt * np.clip(1.0 + 0.15 * low[2] + 0.18 * tum[0], 0.3, None))
    n_wt = max(int(round(wt_frac * n_brain)), 8)
    wt_level = np.partition(wt_ratio[allowed], n_wt - 1)[n_wt - 1]
    wt = allowed & (wt_ratio <= wt_level)
    # Tumour core: a smaller, shifted irregular blob inside WT, with a drawn share of WT.
    core_share = prm.uniform(0.15, 0.55)  # TC / WT volume
    core_ratio = core_share ** (1.0 / 3.0)  # relative radius
    shift = prm.normal(0.0, 0.12, size=3).astype(np.float32) * r_wt
    rho_c = np.sqrt(
        ((z - cz - shift[0]) / aniso[0]) ** 2 + ((y - cy - shift[1]) / aniso[1]) ** 2 + ((x - cx - shift[2]) / aniso[2]) ** 2
    )
    core_ratio_map = rho_c / (core_ratio * r_wt * np.clip(1.0 + 0.22 * tum[1] + 0.08 * low[3], 0.3, None))
    n_core = max(int(round(core_share * wt.sum())), 4)
    core_level = np.partition(core_ratio_map[wt], n_core - 1)[n_core - 1]
    core = wt & (core_ratio_map <= core_level)
    # Enhancing tumour: patchy, only partly rim-like, extent varying; absent in ~1/5 of cases.
    # ET = core & (smooth random field, at a finer scale than the core, + a rim bias of random
    # strength > a random quantile), so the core's outline does not tell where ET is.
    n_e = int(np.clip(round(2.3 / (0.3 * core_ratio * r_wt)), 8, S // 2))
    et_field = _smooth_fields(fld, 1, S, n_e)[0]
    et = np.zeros_like(core)
    if prm.random() >= 0.2:
        u = np.clip(core_ratio_map / core_level, 0.0, 1.0)  # 0 centre .. 1 core border
        rim = prm.uniform(0.0, 1.0)
        score = et_field + rim * (2.0 * u - 1.0)
        q = prm.uniform(0.12, 0.7)  # fraction of the core that enhances
        thr = np.quantile(score[core], 1.0 - q)
        et = core & (score > thr)
    target = np.zeros((S, S, S), dtype=np.uint8)
    target[wt] = 2
    target[core] = 1
    target[et] = 4

    # ---- intensities ----------------------------------------------------------------------
    contrast = _CONTRAST * prm.uniform(0.94, 1.06, size=_CONTRAST.shape).astype(np.float32)
    # Oedema is strongest next to the core and fades towards its own border: ``strength`` in
    # [~0.3, 1] mixes the oedema signal with the host tissue's.
    rel = np.clip(wt_ratio / wt_level, 0.0, 1.0)  # ~0 at the tumour centre .. 1 at the WT border
    out = np.clip((rel - core_ratio) / max(1.0 - core_ratio, 1e-3), 0.0, 1.0)
    strength = np.clip(1.0 - prm.uniform(0.4, 0.75) * out**1.5 + 0.1 * low[3], 0.3, 1.0)
    oed = wt & ~core
    # Healthy enhancing structures in T1c: a few small bright blobs (vessels, choroid plexus).
    vessel_score = np.where(brain & ~wt, fine + 0.4 * mid[2], -np.inf)
    vessel_frac = prm.uniform(0.0005, 0.003)  # of brain volume
    vessels = vessel_score > np.quantile(vessel_score[brain], 1.0 - vessel_frac)
    # Healthy white-matter hyperintensities (small-vessel disease, periventricular caps): oedema-
    # like in FLAIR / T2, unlabelled, in some cases; they keep FLAIR / T2 from being a clean WT test.
    wmh_frac = max(prm.uniform(-0.002, 0.006), 0.0)  # of brain volume
    wmh = np.zeros_like(brain)
    if wmh_frac > 0:
        wmh_score = np.where(wm & ~wt, spots + 0.7 * low[1], -np.inf)
        wmh = wmh_score > np.quantile(wmh_score[brain], 1.0 - wmh_frac)
    wmh_strength = prm.uniform(0.4, 0.8)

    h_tex, t_tex, o_tex = tex[0], tex[1], tex[2]
    image = np.zeros((4, S, S, S), dtype=np.float32)
    noise_sd = prm.uniform(0.035, 0.06)
    for m in range(4):
        cm = contrast[:, m]
        img = np.zeros((S, S, S), dtype=np.float32)
        img[csf] = cm[_CSF]
        img[gm] = cm[_GM]
        img[wm] = cm[_WM]
        img *= 1.0 + 0.05 * h_tex
        host = img[oed]
        img[oed] = host + strength[oed] * (cm[_OED] * (1.0 + 0.10 * o_tex[oed]) - host)
        img[wmh] += wmh_strength * (cm[_OED] - img[wmh])
        # Core (labels 1 and 4 alike outside T1c): heterogeneous texture shared by ET and non-ET.
        tumour_tex = 1.0 + 0.11 * t_tex
        img[core] = cm[_CORE] * tumour_tex[core]
        if m == _T1C:
            enh = 1.0 + 0.15 * mid[1]  # uneven enhancement
            img[et] = cm[_ET] * enh[et] * (1.0 + 0.05 * t_tex[et])
            img[vessels] = cm[_ET] * prm.uniform(0.8, 1.1)
        img = ndimage.gaussian_filter(img, sigma=prm.uniform(0.7, 1.0), mode="constant")
        img *= 1.0 + np.clip(prm.uniform(0.05, 0.09) * bias[m], -0.25, 0.25)
        img *= prm.uniform(0.6, 1.6)  # scanner / protocol scale
        sd = noise_sd * float(img[brain].mean())
        n1 = fld.standard_normal((S, S, S), dtype=np.float32)
        n2 = fld.standard_normal((S, S, S), dtype=np.float32)
        img = np.sqrt((img + sd * n1) ** 2 + (sd * n2) ** 2)  # Rician magnitude noise
        vals = img[brain]
        img = (img - vals.mean()) / (vals.std() + 1e-6)
        img[~brain] = 0.0
        image[m] = img
    return image, target


class BratsSynthetic(Dataset):
    """Synthetic BraTS-like glioma volumes (FLAIR, T1, T1c, T2), generated from (seed, index)."""

    name: ClassVar[str] = "brats_synthetic"
    task: ClassVar[str] = "segmentation"
    modalities: ClassVar[tuple[str, ...]] = MODALITIES
    description: ClassVar[str] = (
        "Synthetic (not real MRI) BraTS-like brain tumour volumes whose 4 modalities carry "
        "information like FLAIR/T1/T1c/T2; generated on the fly."
    )
    defaults: ClassVar[dict[str, Any]] = {"size": 64, "n_train": 40, "n_val": 6, "n_test": 12, "seed": 0}
    #: The validation and test cases follow the training ones (segmentation selects no weights on validation):
    #: more or fewer of them changes the scores, not the model.
    evaluation_params: ClassVar[tuple[str, ...]] = ("n_val", "n_test")
    #: Volumes of at least 16 voxels per axis (the brain model's smallest features); a training and a test case.
    constraints: ClassVar[dict[str, Between]] = {
        "size": Between(16, integer=True), "n_train": Between(1, integer=True), "n_val": Between(0, integer=True),
        "n_test": Between(1, integer=True), "seed": Between(0, integer=True)}
    # Real BraTS post-processing drops predicted ET components under 500 voxels (of ~240x240x155);
    # scaled down here for the much smaller synthetic volumes (64^3 by default).
    et_threshold: ClassVar[int] = 50
    attributes: ClassVar[dict[str, str]] = {"site": f"acquisition site 0..{N_SITES - 1}, case index mod {N_SITES} (a label only)"}

    _CACHE_SIZE = 64

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def _ranges(self) -> dict[str, range]:
        n_tr, n_va, n_te = self.params["n_train"], self.params["n_val"], self.params["n_test"]
        return {
            "train": range(0, n_tr),
            "val": range(n_tr, n_tr + n_va),
            "test": range(n_tr + n_va, n_tr + n_va + n_te),
        }

    def case_ids(self, split: str) -> list[str]:
        ranges = self._ranges()
        if split not in ranges:
            raise ValueError(f"dataset {self.name!r}: unknown split {split!r}; expected one of {list(SPLITS)}")
        return [f"syn{i:04d}" for i in ranges[split]]

    def _index(self, case_id: str) -> tuple[int, str]:
        total = sum(len(r) for r in self._ranges().values())
        digits = case_id[3:] if isinstance(case_id, str) and case_id.startswith("syn") else ""
        if not digits.isdigit() or int(digits) >= total or case_id != f"syn{int(digits):04d}":
            raise KeyError(
                f"dataset {self.name!r}: unknown case id {case_id!r}; expected 'syn0000' .. "
                f"'syn{max(total - 1, 0):04d}' ({total} cases with these parameters)"
            )
        index = int(digits)
        split = next(s for s, r in self._ranges().items() if index in r)
        return index, split

    def case_attribute(self, split: str, name: str) -> np.ndarray:
        if name == "site":
            return np.array([self._index(c)[0] % N_SITES for c in self.case_ids(split)], float)
        return super().case_attribute(split, name)

    def load(self, case_id: str) -> Case:
        index, split = self._index(case_id)
        arrays = self._cache.get(case_id)
        if arrays is None:
            arrays = generate_case(self.params["seed"], index, self.params["size"])
            self._cache[case_id] = arrays
            while len(self._cache) > self._CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(case_id)
        image, target = arrays
        counts = np.bincount(target.ravel(), minlength=5)
        info = {
            "split": split,
            "index": index,
            "seed": self.params["seed"],
            "synthetic": True,
            "has_et": bool(counts[4] > 0),
            "et_voxels": int(counts[4]),
            "tc_voxels": int(counts[1] + counts[4]),
            "wt_voxels": int(counts[1] + counts[2] + counts[4]),
        }
        # Copies: callers may modify the arrays in place without corrupting the cache.
        return Case(case_id, image.copy(), target.copy(), (1.0, 1.0, 1.0), info)
