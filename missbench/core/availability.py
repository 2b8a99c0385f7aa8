"""Availability: which modalities a sample has, and the harness's zeroing of the missing ones.

Three pieces, each used by the engine before any method sees a batch:

- modality-dropping schemes (`DROPOUT_SCHEMES`, `draw_available`): a training batch's random
  per-sample availability;
- a protocol's fixed per-sample availability (`MISSING_SCHEMES`, `split_masks`): missing-rate grids;
- input zeroing (`zero_inputs`): a batch is one tensor (B x M x ..., segmentation) or a list of
  per-modality tensors (classification, where modalities differ in shape); both are treated alike.

Missing-rate masks come in four schemes, each a grid (``missing: {scheme, rates, ...}`` in a protocol
file). Two fix the availability of classification samples (the papers' set-ups):

- ``modality_rate`` (SMIL, ShaSpec Table 3, protocols/audio_rate.yaml): every modality but one is
  always present; ``modality`` is present for round(rate x N) training samples, N the data set's
  total size (train + val + test: SMIL's "15*10 = 150 sound data available, total 1500"), spread
  over the classes as evenly as possible (the classes that get one more are drawn) and drawn
  within each class. Only the training split gets masks; evaluation uses the protocol's subsets.
- ``slots`` (UL4M4, protocols/missing_slots.yaml): each (sample, modality) slot is missing
  independently with probability ``rate``, in every split; a sample that lost every modality gets
  one back, drawn uniformly. So the realised slot-missing rate is rate - rate^M / M (M modalities:
  with two, at most half the slots can be missing when no sample may lose both); runs record it
  in meta.json.

Two give incomplete *training* data to any task, segmentation included (`TRAINING_SCHEMES`): only the
training split gets masks, validation and test cases stay complete and are scored on the protocol's
subsets (PASSION's evaluation), and a mask bounds the method's own dropping instead of replacing it
(`restrict_available`), so every method trains on exactly the modalities a case has:

- ``per_modality`` (PASSION, Shi et al., ACM MM 2024; protocols/passion_rates.yaml): each grid point
  is a vector of missing rates, one per modality; slot (case, m) is missing independently with
  modality m's rate, and a case that lost every modality is drawn again with the same rates until
  it keeps one (PASSION's rule for such cases). So the realised rate of m is (p_m - P) / (1 - P), P
  the product of all rates; runs record the realised rates per modality in meta.json
  (``missing_by_modality``). PASSION's code (github.com/Jun-Jie-Shi/PASSION, commit fd308b5f,
  code/preprocessing/generate_imb_mr.py) instead gives each availability pattern its expected count
  (int(N x P(pattern)), at least 1) and draws only the leftover cases slot by slot, again until
  none is empty; its default training (code/options.py ``--mask_type idt``,
  code/data/datasets_nii.py) uses the mask itself, which ``training: {dropout: full}`` gives here.
- ``mnar`` (protocols/mnar.yaml): one ``modality``'s absence depends on a case attribute the data
  set declares (`missbench.core.dataset.Dataset.attribute_names`): case i loses it with probability
  lo + (hi - lo) q_i, q_i its mid-rank of the attribute among the training cases in (0, 1) (tied
  values share theirs, so the cases of one site lose it alike; 1 - q_i with ``direction: smaller``)
  and lo..hi the steepest ramp in [0, 1] whose mean is the grid point's rate (0..2r for r <= 0.5,
  2r - 1..1 above). The expected missing share of the modality is the rate; the other modalities
  are always present.

Masks depend only on (seed, data set, missing settings, rate) through ``ModelSpec.mask_seed``, never
on the method, so every method of a comparison sees the same masks; runs record their hash
(`mask_hash`) in meta.json and in every row.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

Inputs = torch.Tensor | list[torch.Tensor]

# --- modality-dropping schemes ------------------------------------------------------------------

DROPOUT_SCHEMES = ("count_then_subset", "uniform_subset", "full")


def draw_available(scheme: str, batch: int, n_modalities: int, generator: torch.Generator) -> torch.Tensor:
    """B x M availability, never empty.

    ``count_then_subset``: kept count uniform in 1..M, then a uniform subset of that size (ShaSpec's
    ``--mode=random``, U-HVED); ``uniform_subset``: uniform over the 2^M - 1 subsets (RFNet,
    mmFormer); ``full``: every modality.
    """
    if scheme == "full":
        return torch.ones(batch, n_modalities, dtype=torch.bool)
    if scheme == "count_then_subset":
        out = torch.zeros(batch, n_modalities, dtype=torch.bool)
        counts = torch.randint(1, n_modalities + 1, (batch,), generator=generator)
        for b, k in enumerate(counts.tolist()):
            out[b, torch.randperm(n_modalities, generator=generator)[:k]] = True
        return out
    if scheme == "uniform_subset":
        codes = torch.randint(1, 2**n_modalities, (batch,), generator=generator)
        return (codes[:, None] >> torch.arange(n_modalities)) & 1 == 1
    raise ValueError(f"unknown modality-dropout scheme {scheme!r}; expected one of {list(DROPOUT_SCHEMES)}")


# --- fixed per-sample availability (missing-rate protocols) -------------------------------------

#: Schemes whose masks bound the training split's availability only, on any task (the method still drops within them).
TRAINING_SCHEMES = ("per_modality", "mnar")
MISSING_SCHEMES = ("modality_rate", "slots", *TRAINING_SCHEMES)
#: How a test sample is evaluated: on every protocol subset, or with its own drawn mask.
EVALS = ("subsets", "masks")
#: mnar: whether the cases with the larger or the smaller values of the attribute lose the modality more often.
DIRECTIONS = ("larger", "smaller")


def modality_rate_masks(y: np.ndarray, n_modalities: int, modality: int, rate: float, n_total: int,
                        n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """N x M availability: all present, except ``modality`` present for round(rate x n_total) samples, per class."""
    count = int(round(rate * n_total))
    per_class = np.full(n_classes, count // n_classes)
    per_class[rng.permutation(n_classes)[: count % n_classes]] += 1
    masks = np.ones((len(y), n_modalities), bool)
    masks[:, modality] = False
    for c in range(n_classes):
        members = np.flatnonzero(y == c)
        if per_class[c] > len(members):
            raise ValueError(f"missing rate {rate}: class {c} needs {per_class[c]} training samples with the modality "
                             f"but has {len(members)}")
        masks[rng.choice(members, per_class[c], replace=False), modality] = True
    return masks


def slot_masks(n: int, n_modalities: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """N x M availability, each slot missing with probability ``rate``; a sample never loses every modality."""
    masks = rng.random((n, n_modalities)) >= rate
    empty = np.flatnonzero(~masks.any(1))
    masks[empty, rng.integers(n_modalities, size=len(empty))] = True
    return masks


def per_modality_masks(n: int, rates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """N x M availability, slot (i, m) missing with probability ``rates[m]``; a case that lost every modality is
    drawn again with the same rates until it keeps one (PASSION's rule; see the module docstring)."""
    rates = np.asarray(rates, float)
    if (rates >= 1).all():
        raise ValueError(f"missing rates {rates.tolist()}: at least one modality needs a rate below 1")
    masks = rng.random((n, len(rates))) >= rates
    while (empty := np.flatnonzero(~masks.any(1))).size:
        masks[empty] = rng.random((len(empty), len(rates))) >= rates
    return masks


def attribute_ranks(values: np.ndarray) -> np.ndarray:
    """Each value's mid-rank among ``values``, in (0, 1): (#smaller + #equal / 2) / N, so tied values share one."""
    values = np.asarray(values, float)
    ordered = np.sort(values)
    below, upto = np.searchsorted(ordered, values, "left"), np.searchsorted(ordered, values, "right")
    return (below + upto) / (2 * len(values))


def mnar_masks(values: np.ndarray, n_modalities: int, modality: int, rate: float, direction: str,
               rng: np.random.Generator) -> np.ndarray:
    """N x M availability: ``modality`` missing with a probability that rises linearly with the case's mid-rank of
    ``values`` (falls, with direction 'smaller'), from lo to hi, the steepest ramp in [0, 1] with mean ``rate``."""
    q = attribute_ranks(values)
    q = q if direction == "larger" else 1 - q
    lo, hi = (0.0, 2 * rate) if rate <= 0.5 else (2 * rate - 1, 1.0)
    masks = np.ones((len(q), n_modalities), bool)
    masks[:, modality] = rng.random(len(q)) >= lo + (hi - lo) * q
    return masks


def training_masks(missing: dict[str, Any], rate: float | None, n: int, modalities: tuple[str, ...],
                   attributes: dict[str, np.ndarray], seed: int) -> np.ndarray:
    """The training split's N x M masks of a `TRAINING_SCHEMES` scheme (``attributes``: the mnar attribute per case)."""
    rng = np.random.default_rng([seed, 0])
    if missing["scheme"] == "per_modality":
        return per_modality_masks(n, np.array([missing["modality_rates"][m] for m in modalities]), rng)
    if missing["scheme"] == "mnar":
        values = attributes[missing["attribute"]]
        if len(values) != n:
            raise ValueError(f"attribute {missing['attribute']!r}: {len(values)} values for {n} training cases")
        return mnar_masks(values, len(modalities), modalities.index(missing["modality"]), float(rate),
                          missing.get("direction", DIRECTIONS[0]), rng)
    raise ValueError(f"missing-modality scheme {missing['scheme']!r} is not one of {list(TRAINING_SCHEMES)}")


def restrict_available(drawn: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """B x M: a method's dropping draw within each sample's own modalities (``masks``); a sample whose draw keeps
    none of them gets its whole mask, so no sample is ever empty and none shows a modality it lacks."""
    out = drawn & masks
    empty = ~out.any(1)
    out[empty] = masks[empty]
    return out


def split_masks(missing: dict[str, Any], rate: float, labels: dict[str, np.ndarray], modalities: tuple[str, ...],
                n_classes: int, seed: int) -> dict[str, np.ndarray | None]:
    """The masks of each split ('train', 'val', 'test' -> N x M, or None: evaluate on the protocol's subsets)."""
    rngs = {split: np.random.default_rng([seed, i]) for i, split in enumerate(("train", "val", "test"))}
    if missing["scheme"] == "modality_rate":
        n_total = sum(len(v) for v in labels.values())
        train = modality_rate_masks(labels["train"], len(modalities), modalities.index(missing["modality"]), rate,
                                    n_total, n_classes, rngs["train"])
        return {"train": train, "val": None, "test": None}
    if missing["scheme"] == "slots":
        out: dict[str, np.ndarray | None] = {s: slot_masks(len(y), len(modalities), rate, rngs[s]) for s, y in labels.items()}
        if missing.get("eval", "masks") == "subsets":
            out["val"] = out["test"] = None
        return out
    raise ValueError(f"unknown missing-modality scheme {missing['scheme']!r}; expected one of {list(MISSING_SCHEMES)}")


def missing_share(masks: np.ndarray | None) -> float:
    """Share of (sample, modality) slots that are missing (0 for None: nothing fixed)."""
    return float((~masks).mean()) if masks is not None and masks.size else 0.0


def missing_by_modality(masks: np.ndarray, modalities: tuple[str, ...]) -> dict[str, float]:
    """Each modality's realised missing rate (share of samples without it)."""
    return {m: float((~masks[:, i]).mean()) if len(masks) else 0.0 for i, m in enumerate(modalities)}


def mask_hash(masks: np.ndarray) -> str:
    """First 16 hex digits of the SHA-256 of "<N>x<M>" and the bit-packed N x M masks: equal masks, equal hash."""
    masks = np.asarray(masks, bool)
    digest = hashlib.sha256(f"{masks.shape[0]}x{masks.shape[1]}".encode() + np.packbits(masks, axis=None).tobytes())
    return digest.hexdigest()[:16]


def missing_label(missing: dict[str, Any], rate: float | None) -> str:
    """A missing setting in a few words (dry runs): the scheme and its rate, vector or attribute."""
    if not missing:
        return ""
    if missing["scheme"] == "per_modality":
        return "per_modality " + ",".join(f"{m}={r:g}" for m, r in missing["modality_rates"].items())
    if missing["scheme"] == "mnar":
        return f"mnar {missing['modality']} by {missing['attribute']} ({missing.get('direction', DIRECTIONS[0])}) rate={rate:g}"
    return f"missing_rate={rate:g}"


# --- zeroing and batch helpers ---------------------------------------------------------------------

def zero_inputs(x: Inputs, available: torch.Tensor) -> Inputs:
    """Zero the inputs of missing modalities (``available``: B x M), the harness's job before any method sees ``x``."""
    if isinstance(x, torch.Tensor):
        return x * available.to(x.device, x.dtype).view(*available.shape, *[1] * (x.ndim - 2))
    return [xm * available[:, m].to(xm.device, xm.dtype).view(-1, *[1] * (xm.ndim - 1)) for m, xm in enumerate(x)]


def zeros_like(x: Inputs) -> Inputs:
    """An all-zero batch of ``x``'s shape: every modality missing."""
    return torch.zeros_like(x) if isinstance(x, torch.Tensor) else [torch.zeros_like(t) for t in x]


def batch_size(x: Inputs) -> int:
    """The number of samples in a batch."""
    return x.shape[0] if isinstance(x, torch.Tensor) else x[0].shape[0]


def device(x: Inputs) -> torch.device:
    """The device a batch lives on."""
    return x.device if isinstance(x, torch.Tensor) else x[0].device


def shape_key(x: Inputs) -> tuple:
    """Hashable shape of a batch (a cache key for features of an all-zero input)."""
    return tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(tuple(t.shape) for t in x)
