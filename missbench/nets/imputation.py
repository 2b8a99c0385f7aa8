"""UL4M4's task-independent imputation in embedding space: partial-modality k-means and greedy completion.

Paper: H. Ismkhan, H. Bouchachia, "Unsupervised Learning for Missing Modalities in Multimodal
Learning", arXiv 2606.15743 (2026). Code: github.com/h-ismkhan/Multimodal-Learning-with-Missing-
Modalities-via-Unsupervised-Learning at 0f84e8f (``MM-IMDb/mmimdb_ul4m4.py``: ``compute_norm_stats``,
``partial_distance_matrix``, ``kmeans_partial_modality``, ``complete_sample``; ``CMU-MOSI/mosi-ul4m4.py``:
``_initialize_centres``, k-means++ under the partial distance).

A sample is a list of per-modality embeddings (entry m: N x d_m) with an N x M availability mask; the
values of a missing slot are never read. The steps:

1. normalisation: per modality, the mean and the population standard deviation (+1e-8) over the
   training samples that have it (mean 0, std 1 for a modality no training sample has);
2. distance between sample i and centre j over the modalities both have,
   d(i, j) = sqrt(mean_{m in M_ij} ||z_i^m - c_j^m||^2 / d_m), infinite when M_ij is empty;
3. k-means: k-means++ seeding under that distance (the MOSI script), each centre inheriting its
   sample's availability; Lloyd iterations assigning each sample to its nearest centre and updating a
   centre's modality m to the mean over its members that have m; a modality no member has, and an
   empty cluster, keep their previous value and availability (the MM-IMDb script); stop when the
   assignments repeat, or after ``iterations``;
4. completion of an incomplete sample: candidate f is the sample with each missing modality taken from
   centre f where centre f has it; repeatedly the (remaining candidate, centre) pair at the smallest
   distance is taken, its candidate removed, and the candidate's values copied into every modality still
   missing that it has; candidates are not refreshed with values filled earlier;
5. de-normalisation of the completed embeddings; observed embeddings are returned untouched.

Where the scripts leave a case open, the choices here: k-means++ draws a sample with no modality in
common with any chosen centre before any other (the limit of the MOSI script's 1e9 stand-in for an
infinite distance); a sample at infinite distance from every centre during k-means is assigned to a
centre drawn at random (the MM-IMDb script); k is capped at the number of samples; a modality still
missing after completion (no centre has it) is left at the training mean (0 after normalisation,
the MM-IMDb script's zero fallback). Ties go to the lowest index, as ``np.argmin`` does.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

#: Added to the standard deviation, as the MM-IMDb script's ``compute_norm_stats``.
STD_EPS = 1e-8
#: Largest N x K x K x M distance tensor `EmbeddingImputer` lets `complete` build at once.
CHUNK = 2**24


class Clustering(NamedTuple):
    """The result of `partial_kmeans`: per-modality centres (K x d_m), their availability (K x M),
    each sample's cluster (N) and the number of Lloyd iterations run."""

    centres: list[torch.Tensor]
    present: torch.Tensor
    assignments: torch.Tensor
    iterations: int


def modality_statistics(z: list[torch.Tensor], present: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per modality, the mean and population std (+1e-8) over the samples that have it."""
    means, stds = [], []
    for m, zm in enumerate(z):
        rows = zm[present[:, m]]
        if len(rows):
            means.append(rows.mean(0))
            stds.append(rows.std(0, unbiased=False) + STD_EPS)
        else:
            means.append(zm.new_zeros(zm.shape[1]))
            stds.append(zm.new_ones(zm.shape[1]))
    return means, stds


def normalise(z: list[torch.Tensor], present: torch.Tensor, means: list[torch.Tensor], stds: list[torch.Tensor]) -> list[torch.Tensor]:
    """(z - mean) / std per modality; missing slots become 0 whatever they held."""
    return [torch.where(present[:, m, None], (zm - means[m]) / stds[m], 0) for m, zm in enumerate(z)]


def squared_distances(z: list[torch.Tensor], centres: list[torch.Tensor]) -> torch.Tensor:
    """N x K x M: ||z_i^m - c_j^m||^2 / d_m for every sample, centre and modality (availability ignored)."""
    return torch.stack([torch.cdist(zm, cm).pow(2) / zm.shape[1] for zm, cm in zip(z, centres)], -1)


def combine(sq: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
    """sqrt of the mean of ``sq`` (... x M) over the ``shared`` modalities; infinite where none is shared."""
    n = shared.sum(-1)
    total = torch.where(shared, sq, 0).sum(-1)
    return torch.where(n > 0, (total / n.clamp_min(1)).sqrt(), torch.inf)


def partial_distance(z: list[torch.Tensor], present: torch.Tensor, centres: list[torch.Tensor], centre_present: torch.Tensor) -> torch.Tensor:
    """N x K partial-modality distances d(i, j) (UL4M4 Eq. 2; the MM-IMDb script's ``partial_distance_matrix``)."""
    return combine(squared_distances(z, centres), present[:, None, :] & centre_present[None, :, :])


def kmeans_plus_plus(z: list[torch.Tensor], present: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of k seed samples: the first uniform, each next one with probability proportional to d^2 to
    its nearest chosen seed under the partial distance (samples at infinite distance first)."""
    n = present.shape[0]
    chosen = [int(torch.randint(n, (), generator=generator))]
    nearest = torch.full((n,), torch.inf, dtype=z[0].dtype)
    for _ in range(k - 1):
        last = [zm[chosen[-1]][None] for zm in z]
        nearest = torch.minimum(nearest, partial_distance(z, present, last, present[chosen[-1]][None])[:, 0].pow(2))
        far = torch.isinf(nearest)
        if far.any():
            weights = far.to(z[0].dtype)
        elif nearest.sum() > 0:
            weights = nearest
        else:  # every sample coincides with a seed
            weights = torch.ones(n, dtype=z[0].dtype)
        chosen.append(int(torch.multinomial(weights, 1, generator=generator)))
    return torch.tensor(chosen)


def partial_kmeans(z: list[torch.Tensor], present: torch.Tensor, k: int, iterations: int, generator: torch.Generator) -> Clustering:
    """k-means over partial samples (UL4M4 stage 1): see the module docstring, step 3."""
    if present.ndim != 2 or not present.any(1).all():
        raise ValueError("partial_kmeans: every sample needs at least one available modality")
    n = present.shape[0]
    k = min(k, n)
    seeds = kmeans_plus_plus(z, present, k, generator)
    centres = [zm[seeds].clone() for zm in z]
    centre_present = present[seeds].clone()
    assignments = torch.full((n,), -1, dtype=torch.long)
    done = 0
    for done in range(1, iterations + 1):
        dist = partial_distance(z, present, centres, centre_present)
        new = dist.argmin(1)
        lost = torch.isinf(dist).all(1)
        if lost.any():
            new[lost] = torch.randint(k, (int(lost.sum()),), generator=generator)
        converged = torch.equal(new, assignments)
        assignments = new
        member = torch.nn.functional.one_hot(assignments, k).T.to(z[0].dtype)  # K x N
        for m, zm in enumerate(z):
            weights = member * present[:, m].to(zm.dtype)  # K x N, members that have m
            count = weights.sum(1)
            has = count > 0
            means = weights @ torch.where(present[:, m, None], zm, 0) / count.clamp_min(1)[:, None]
            centres[m] = torch.where(has[:, None], means, centres[m])
            centre_present[:, m] |= has
        if converged:
            break
    return Clustering(centres, centre_present, assignments, done)


def complete(
    z: list[torch.Tensor], present: torch.Tensor, centres: list[torch.Tensor], centre_present: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """UL4M4's iterative greedy completion (stage 2) of normalised samples; returns the completed
    embeddings and the availability after completion (N x M).

    Candidate f keeps the sample's observed modalities and takes each missing one from centre f. Its
    distance to centre j reuses the sample-to-centre and centre-to-centre distances per modality. As
    candidates are not refreshed, the loop over global-minimum pairs visits the candidates in order of
    their distance to the nearest centre (ties: lowest index), and each missing modality is filled by
    the first candidate in that order that has it. That is what is computed, for all samples at once.
    """
    n, m = present.shape
    k = centre_present.shape[0]
    sample_sq = squared_distances(z, centres)  # N x K(j) x M
    centre_sq = squared_distances(centres, centres)  # K(f) x K(j) x M
    observed = present[:, None, None, :]  # N x 1 x 1 x M
    sq = torch.where(observed, sample_sq[:, None], centre_sq[None])  # N x K(f) x K(j) x M
    cand_present = present[:, None, :] | centre_present[None]  # N x K(f) x M
    dist = combine(sq, cand_present[:, :, None, :] & centre_present[None, None]).amin(2)  # N x K(f)
    order = torch.sort(dist, dim=1, stable=True).indices  # candidates in the greedy loop's order
    ranked = centre_present[order]  # N x K x M: does the r-th candidate's centre have m
    first = torch.where(ranked, torch.arange(k, device=ranked.device)[None, :, None], k).amin(1)  # N x M, k if none
    source = order.gather(1, first.clamp_max(k - 1))  # N x M: the centre each modality is filled from
    fill = (~present) & (first < k)
    out = []
    for j, (zm, cm) in enumerate(zip(z, centres)):
        filled = torch.where(fill[:, j, None], cm[source[:, j]], 0)
        out.append(torch.where(present[:, j, None], zm, filled))
    return out, present | fill


class EmbeddingImputer(nn.Module):
    """UL4M4's imputer as a module: the fitted statistics and centres live in buffers, so a checkpoint
    carries them; no trainable parameters. ``dims`` are the modalities' embedding sizes."""

    def __init__(self, dims: list[int], k: int = 64, iterations: int = 50) -> None:
        super().__init__()
        self.k, self.iterations, self.dims = k, iterations, list(dims)
        for m, d in enumerate(dims):
            self.register_buffer(f"mean{m}", torch.zeros(d))
            self.register_buffer(f"std{m}", torch.ones(d))
            self.register_buffer(f"centres{m}", torch.zeros(k, d))
        self.register_buffer("centre_present", torch.zeros(k, len(dims), dtype=torch.bool))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def _stats(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return [getattr(self, f"mean{m}") for m in range(len(self.dims))], [getattr(self, f"std{m}") for m in range(len(self.dims))]

    def _centres(self) -> list[torch.Tensor]:
        return [getattr(self, f"centres{m}") for m in range(len(self.dims))]

    @torch.no_grad()
    def fit(self, z: list[torch.Tensor], present: torch.Tensor, seed: int) -> Clustering:
        """Normalisation statistics and k-means centres from training embeddings (k-means on the CPU,
        in float64, seeded by ``seed``); the centres are stored normalised. Unused centre slots (k
        capped at the sample count) are stored with no modality, which never matches a sample."""
        device = self.centre_present.device
        z = [zm.detach().double().cpu() for zm in z]
        present = present.cpu()
        means, stds = modality_statistics(z, present)
        found = partial_kmeans(normalise(z, present, means, stds), present, self.k, self.iterations, torch.Generator().manual_seed(seed))
        used = len(found.present)
        for m in range(len(self.dims)):
            getattr(self, f"mean{m}").copy_(means[m])
            getattr(self, f"std{m}").copy_(stds[m])
            getattr(self, f"centres{m}").zero_()[:used].copy_(found.centres[m])
        self.centre_present.zero_()[:used].copy_(found.present.to(device))
        self.fitted.fill_(True)
        return found

    def forward(self, z: list[torch.Tensor], present: torch.Tensor) -> list[torch.Tensor]:
        """Completed embeddings (each N x d_m) in the encoders' space; observed ones pass through unchanged."""
        if not bool(self.fitted):
            raise RuntimeError("EmbeddingImputer: fit() must run before imputing")
        present = present.to(z[0].device)
        means, stds = self._stats()
        centres = [c.to(z[0].dtype) for c in self._centres()]
        normed = normalise(z, present, means, stds)
        step = max(1, CHUNK // (len(centres[0]) ** 2 * len(z)))  # complete() holds N x K x K x M distances
        parts = [complete([zm[i : i + step] for zm in normed], present[i : i + step], centres, self.centre_present)[0]
                 for i in range(0, max(len(present), 1), step)]
        filled = [torch.cat([part[m] for part in parts]) for m in range(len(z))]
        return [torch.where(present[:, m, None], zm, f * stds[m] + means[m]) for m, (zm, f) in enumerate(zip(z, filled))]
