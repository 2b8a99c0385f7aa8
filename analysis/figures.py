"""Figures from the results store (PDF for papers, PNG for quick looks), readable in greyscale:
distinct markers and line styles, grey palettes and the perceptually uniform cividis colour map.

Files carry no timestamps (PDF CreationDate, PNG Software removed), so reruns are byte-identical;
each figure's run ids go to ``<stem>.runs.txt`` beside it.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.load import Store, canonical_subsets  # noqa: E402
from analysis.stats import friedman_nemenyi  # noqa: E402
from analysis.tables import REGIONS, Skip, order_variants, per_case, seg_values, with_params  # noqa: E402

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINES = ("-", "--", ":", "-.")


def setup() -> None:
    """Fixed, small fonts and embedded TrueType fonts in PDFs."""
    plt.rcParams.update({"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
                         "xtick.labelsize": 7, "ytick.labelsize": 7, "pdf.fonttype": 42, "figure.dpi": 100,
                         "savefig.dpi": 150, "axes.spines.top": False, "axes.spines.right": False})


def save(fig: plt.Figure, stem: Path, runs: list[str]) -> list[Path]:
    """Write ``stem``.pdf, .png and .runs.txt without timestamps; close the figure."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    pdf, png, txt = stem.with_suffix(".pdf"), stem.with_suffix(".png"), stem.with_suffix(".runs.txt")
    fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None})
    fig.savefig(png, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    txt.write_text("".join(f"{r}\n" for r in sorted(runs)))
    return [pdf, png, txt]


def heatmap(rows: pd.DataFrame, stem: Path, et_region: str = "ET") -> list[Path]:
    """Mean Dice (%) per subset (rows) and variant (columns), one panel per region."""
    d = seg_values(rows, "dice", et_region)
    labels = [s.label for s in canonical_subsets(d)]
    variants = order_variants(d.variant)
    mean = d.groupby(["variant", "seed", "eval_subset", "region"]).value.mean().groupby(level=["variant", "eval_subset", "region"]).mean()
    fig, axes = plt.subplots(1, 3, figsize=(2.2 + 3 * (0.55 * len(variants) + 0.6), 0.28 * len(labels) + 1.6), sharey=True)
    for ax, region in zip(axes, REGIONS):
        grid = np.array([[mean.get((v, s, region), np.nan) for v in variants] for s in labels])
        im = ax.imshow(grid, cmap="cividis", vmin=0, vmax=100, aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            if math.isfinite(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6, color="black" if v > 55 else "white")
        ax.set_title(region)
        ax.set_xticks(range(len(variants)), variants, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.colorbar(im, ax=axes, fraction=0.03, pad=0.02, label="mean Dice (%)")
    fig.suptitle(f"Dice per subset, {rows.protocol.iloc[0]}, budget {rows.budget.iloc[0]} (mean over cases, then seeds)", y=1.0)
    return save(fig, stem, sorted(d.run_id.unique()))


def case_boxes(rows: pd.DataFrame, stem: Path, et_region: str = "ET") -> list[Path]:
    """Per-case Dice (seed-averaged) per subset: a box per variant with the cases as points, one row per region."""
    d = seg_values(rows, "dice", et_region)
    labels = [s.label for s in canonical_subsets(d)]
    variants = order_variants(d.variant)
    cases = per_case(d).set_index(["region", "eval_subset", "variant"]).value.sort_index()
    k = len(variants)
    width = 0.8 / k
    greys = [str(0.35 + 0.6 * i / max(k - 1, 1)) for i in range(k)]
    jitter = np.random.default_rng(0)
    fig, axes = plt.subplots(3, 1, figsize=(max(6.0, 0.22 * len(labels) * (k + 1)), 7.0), sharex=True)
    for ax, region in zip(axes, REGIONS):
        for i, v in enumerate(variants):
            data = [cases.get((region, s, v), pd.Series(dtype=float)).to_numpy() for s in labels]
            pos = np.arange(len(labels)) - 0.4 + width * (i + 0.5)
            ax.boxplot(data, positions=pos, widths=width * 0.85, patch_artist=True, showfliers=False, manage_ticks=False,
                       boxprops={"facecolor": greys[i], "linewidth": 0.6}, medianprops={"color": "black", "linewidth": 0.9},
                       whiskerprops={"linewidth": 0.6}, capprops={"linewidth": 0.6})
            for x, vals in zip(pos, data):
                ax.scatter(x + jitter.uniform(-0.25, 0.25, len(vals)) * width, vals, s=3, color="black", marker=MARKERS[i % len(MARKERS)],
                           linewidths=0, zorder=3)
        ax.set_ylabel(f"{region} Dice (%)")
        values = cases.loc[region] if region in cases.index.get_level_values(0) else pd.Series([0.0, 100.0])
        lo, hi = max(0.0, float(values.min()) - 5.0), min(100.0, float(values.max()) + 5.0)
        ax.set_ylim(lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo))
    handles = [Patch(facecolor=g, edgecolor="black", linewidth=0.6, label=v) for g, v in zip(greys, variants)]
    axes[0].legend(handles=handles, ncols=min(k, 4), loc="lower left", bbox_to_anchor=(0, 1.02), frameon=False)
    axes[-1].set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    fig.suptitle(f"Per-case Dice, {rows.protocol.iloc[0]}, budget {rows.budget.iloc[0]} "
                 f"({d.case_id.nunique()} cases, seed-averaged; boxes: quartiles, whiskers 1.5 IQR)", y=1.0)
    fig.tight_layout()
    return save(fig, stem, sorted(d.run_id.unique()))


def cd_diagram(rows: pd.DataFrame, stem: Path, et_region: str = "ET") -> list[Path]:
    """Critical-difference diagram (Demsar 2006) of mean ranks over the (subset, region) cells of Dice."""
    d = seg_values(rows, "dice", et_region)
    cells = d.groupby(["eval_subset", "region", "variant", "seed"]).value.mean().groupby(level=["eval_subset", "region", "variant"]).mean()
    cells = cells.unstack("variant")
    if cells.shape[1] < 3:
        raise Skip(f"a rank diagram needs >= 3 variants, found {cells.shape[1]}")
    test = friedman_nemenyi(cells, higher_is_better=True)
    ranks, k = test.ranks, len(test.ranks)
    fig, ax = plt.subplots(figsize=(6.0, 1.2 + 0.22 * k))
    ax.set_xlim(1 - 0.3, k + 0.3)
    ax.set_ylim(0, 1.12)
    ax.axis("off")
    top = 0.82
    ax.plot([1, k], [top, top], color="black", lw=0.8)
    for r in range(1, k + 1):
        ax.plot([r, r], [top, top + 0.03], color="black", lw=0.8)
        ax.text(r, top + 0.05, str(r), ha="center", va="bottom", fontsize=7)
    ax.plot([1, 1 + test.critical_difference], [top + 0.16, top + 0.16], color="black", lw=1.5)
    ax.text(1 + test.critical_difference / 2, top + 0.18, f"CD = {test.critical_difference:.2f}", ha="center", va="bottom", fontsize=7)
    half = math.ceil(k / 2)
    step = (top - 0.1) / (half + 1)
    for i, (name, r) in enumerate(ranks.items()):
        left = i < half
        y = top - step * ((i if left else k - 1 - i) + 1)
        x_text = 1 - 0.25 if left else k + 0.25
        ax.plot([r, r, x_text], [top, y, y], color="black", lw=0.7)
        ax.text(x_text + (-0.02 if left else 0.02), y, f"{name} ({r:.2f})", ha="right" if left else "left", va="center", fontsize=7)
    values = ranks.to_numpy()
    cliques, last_end = [], -1
    for i in range(k):
        j = i
        while j + 1 < k and values[j + 1] - values[i] < test.critical_difference:
            j += 1
        if j > i and j > last_end:
            cliques.append((i, j))
            last_end = j
    for n, (i, j) in enumerate(cliques):
        y = top - 0.05 - 0.04 * n
        ax.plot([values[i] - 0.03, values[j] + 0.03], [y, y], color="black", lw=2.5, solid_capstyle="round")
    ax.set_title(f"Mean rank of Dice over {test.n_cells} (subset, region) cells (1 = best); Friedman p = {test.friedman_p:.3g}; "
                 f"bars join variants within the Nemenyi CD (alpha = {test.alpha})", fontsize=7, pad=10)
    return save(fig, stem, sorted(d.run_id.unique()))


def sweep_curves(rows: pd.DataFrame, store: Store, stem: Path, subset: str = "T1", et_region: str = "ET") -> list[Path]:
    """Mean Dice vs each swept weight (ShaSpec Fig. 4): one panel per numeric parameter, lines per region,
    a band of ± 1 std over seeds (over cases with one seed); top row: ``subset`` only, bottom: mean over subsets."""
    d = with_params(seg_values(rows, "dice", et_region), store)
    params = pd.DataFrame(list(d.drop_duplicates("run_id").params), index=d.drop_duplicates("run_id").run_id)
    numeric = [k for k in sorted(params.columns) if params[k].nunique() > 1 and pd.api.types.is_numeric_dtype(params[k])]
    if not numeric:
        raise Skip("no numeric method parameter varies across these runs (alpha/beta sweep; runs record resolved parameters in meta.json)")
    if subset not in set(d.eval_subset):
        raise Skip(f"the sweep was not scored on subset {subset}")
    fig, axes = plt.subplots(2, len(numeric), figsize=(3.2 * len(numeric), 5.0), squeeze=False, sharey="row")
    runs: set[str] = set()
    for col, key in enumerate(numeric):
        others = [k for k in params.columns if k != key and params[k].nunique() > 1]
        groups = params.groupby(others, dropna=False) if others else [((), params)]
        _, best = min(groups, key=lambda kv: (-kv[1][key].nunique(), min(kv[1].index)))
        values = sorted(best[key].unique())
        fixed = ", ".join(f"{k}={best[k].iloc[0]}" for k in others)
        sel = d[d.run_id.isin(best.index)].assign(x=lambda f: f.run_id.map(best[key]))
        runs |= set(best.index)
        for row, (where, name) in enumerate(((sel[sel.eval_subset == subset], f"test {subset}"), (sel, "mean over subsets"))):
            ax = axes[row, col]
            for i, region in enumerate(REGIONS):
                r = where[where.region == region]
                per_seed = r.groupby(["x", "seed", "eval_subset"]).value.mean().groupby(level=["x", "seed"]).mean()
                n_seeds = r.seed.nunique()
                if n_seeds > 1:
                    m, s = per_seed.groupby(level="x").mean(), per_seed.groupby(level="x").std()
                else:
                    pc = r.groupby(["x", "case_id"]).value.mean()
                    m, s = pc.groupby(level="x").mean(), pc.groupby(level="x").std()
                m, s = m.reindex(values), s.reindex(values).fillna(0)
                xs = np.arange(len(values))
                ax.plot(xs, m, marker=MARKERS[i], ls=LINES[i], color=str(0.15 * i), label=region, lw=1.2, ms=4)
                ax.fill_between(xs, m - s, m + s, color=str(0.15 * i), alpha=0.15, lw=0)
            ax.set_xticks(range(len(values)), [f"{v:g}" for v in values])
            ax.set_xlabel(f"{key}" + (f" ({fixed})" if fixed else ""))
            ax.set_title(f"{name}; band: ±1 std over {'seeds' if n_seeds > 1 else 'cases'}")
            if col == 0:
                ax.set_ylabel("mean Dice (%)")
    axes[0, 0].legend(frameon=False)
    fig.suptitle(f"Sensitivity to the loss weights, {rows.protocol.iloc[0]}, budget {rows.budget.iloc[0]}", y=1.0)
    fig.tight_layout()
    return save(fig, stem, sorted(runs))


def modality_share(x: np.ndarray, groups: np.ndarray) -> float:
    """Share of the total variance explained by the modality (eta squared, summed over feature channels)."""
    total = ((x - x.mean(0)) ** 2).sum()
    between = sum((groups == g).sum() * ((x[groups == g].mean(0) - x.mean(0)) ** 2).sum() for g in np.unique(groups))
    return float(between / total) if total > 0 else math.nan


def pca2(x: np.ndarray) -> np.ndarray:
    """First two principal components (signs fixed: the largest loading positive), deterministic."""
    c = x - x.mean(0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    vt = vt[:2] * np.sign(vt[:2][np.arange(min(2, len(vt))), np.abs(vt[:2]).argmax(1)])[:, None]
    out = c @ vt.T
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def feature_plot(store: Store, stem: Path) -> list[Path]:
    """PCA of a trained ShaSpec's pooled shared and specific features per test case, coloured by modality
    (ShaSpec's t-SNE figure): shared features should overlap across modalities, specific ones separate."""
    found = sorted((run_id, d / "features.npz") for run_id, d in store.dirs.items() if (d / "features.npz").exists())
    if not found:
        raise Skip("no run folder has features.npz (ShaSpec runs write it after evaluation)")
    # The plain model of the non-dedicated protocol first, then any non-dedicated default, then the rest.
    spec = {r: store.meta[r].get("spec", {}) for r, _ in found}
    run_id, path = min(found, key=lambda rp: (spec[rp[0]].get("mode") != "non_dedicated", bool(spec[rp[0]].get("method_params")),
                                              spec[rp[0]].get("protocol") != "non_dedicated", rp[0]))
    with np.load(path, allow_pickle=False) as z:
        views = {k: z[k] for k in ("shared", "specific")}
        mods = [str(m) for m in z["modalities"]]
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.2))
    greys = ["0.0", "0.35", "0.6", "0.8", "0.5", "0.2"]
    for ax, (name, f) in zip(axes, views.items()):
        n, m = f.shape[:2]
        x = f.reshape(n * m, -1).astype(np.float64)
        groups = np.tile(np.arange(m), n)
        z2 = pca2(x)
        for i, mod in enumerate(mods):
            sel = groups == i
            ax.scatter(z2[sel, 0], z2[sel, 1], marker=MARKERS[i % len(MARKERS)], s=22, label=mod, facecolors=greys[i % len(greys)],
                       edgecolors="black", linewidths=0.5)
        ax.set_title(f"{name} features: modality explains {100 * modality_share(x, groups):.0f}% of variance")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    axes[1].legend(frameon=False, loc="best")
    fig.suptitle(f"Pooled bottleneck features of {store.meta[run_id]['spec']['method']} ({n} test cases x {m} modalities), run {run_id}", y=1.02)
    fig.tight_layout()
    return save(fig, stem, [run_id])
