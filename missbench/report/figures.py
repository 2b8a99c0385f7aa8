"""Figures of pooled runs (PDF for papers, PNG for quick looks), sized for a two-column paper: one column
(3.3 in) or the page (6.9 in) wide, fonts of 6-8 pt at that size, readable in greyscale (markers, line
styles, grey palettes, the perceptually uniform cividis map scaled to the data shown).

Files carry no timestamps (PDF CreationDate, PNG Software removed), so reruns are byte-identical; each
figure's run ids go to ``<stem>.runs.txt`` beside it.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.textpath import TextPath  # noqa: E402

from missbench.report.load import Store  # noqa: E402
from missbench.report.modality import MARGIN, modality_values  # noqa: E402
from missbench.store.run_folder import FEATURES  # noqa: E402
from missbench.report.model import Pool, canonical_subsets, natural_key, show  # noqa: E402
from missbench.report.stats import PERMUTATIONS, friedman_nemenyi, permutation_chance  # noqa: E402
from missbench.report.tables import REGIONS, Skip, dao_losses, per_case, seg_values, timing_values  # noqa: E402

#: Figure widths (inches) of one column and of the page of a two-column paper.
COLUMN_IN, PAGE_IN = 3.3, 6.9
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINES = ("-", "--", ":", "-.")
#: Parameter names drawn as Greek letters.
GREEK = {"alpha": r"$\alpha$", "beta": r"$\beta$"}


def setup() -> None:
    """Fonts readable at print size and embedded TrueType fonts in PDFs."""
    plt.rcParams.update({"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "legend.fontsize": 6,
                         "xtick.labelsize": 6, "ytick.labelsize": 6, "figure.titlesize": 8, "pdf.fonttype": 42,
                         "figure.dpi": 100, "savefig.dpi": 200, "axes.spines.top": False, "axes.spines.right": False})


def save(fig: plt.Figure, stem: Path, runs: list[str]) -> list[Path]:
    """Write ``stem``.pdf, .png and .runs.txt at the figure's own size, without timestamps; close the figure."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    pdf, png, txt = stem.with_suffix(".pdf"), stem.with_suffix(".png"), stem.with_suffix(".runs.txt")
    fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None})
    fig.savefig(png, metadata={"Software": None})
    plt.close(fig)
    txt.write_text("".join(f"{r}\n" for r in sorted(runs)))
    return [pdf, png, txt]


def close_all() -> None:
    """Close every open figure (after a figure failed half-drawn)."""
    plt.close("all")


def param_name(key: str) -> str:
    """A parameter's name on an axis: Greek where it has a letter (alpha -> α)."""
    return GREEK.get(key, key)


def grid_range(grids: dict[str, np.ndarray], empty: tuple[float, float]) -> tuple[float, float]:
    """The colour scale of heat-map panels: the finite values' range (widened by 0.5 when flat), ``empty`` without any."""
    finite = np.concatenate([g[np.isfinite(g)] for g in grids.values()])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else empty
    return (lo - 0.5, hi + 0.5) if hi - lo < 1e-9 else (lo, hi)


def annotated_grid(ax: plt.Axes, grid: np.ndarray, scale: tuple[float, float], digits: int, title: str, columns: list[str],
                   rows: list[str]) -> AxesImage:
    """One heat-map panel: ``grid`` (rows x columns) coloured on ``scale``, each finite value printed in its cell."""
    lo, hi = scale
    im = ax.imshow(grid, cmap="cividis", vmin=lo, vmax=hi, aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        if math.isfinite(v):
            ax.text(j, i, f"{v:.{digits}f}", ha="center", va="center", fontsize=5, in_layout=False, clip_on=True,
                    color="black" if (v - lo) / (hi - lo) > 0.55 else "white")
    ax.set_title(title)
    ax.set_xticks(range(len(columns)), columns, rotation=40, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return im


def heatmap(pool: Pool, store: Store, stem: Path, et_region: str = "ET") -> list[Path]:
    """Mean Dice (%) per subset (rows) and column (variant), one panel per region, on one colour scale
    spanning the values shown (not 0-100, which would hide their differences)."""
    d = seg_values(pool, store, "dice", et_region)
    labels = [s.label for s in canonical_subsets(d)]
    variants = [c.label for c in pool.columns if c.label in set(d.column)]
    mean = d.groupby(["column", "seed", "eval_subset", "region"]).value.mean().groupby(level=["column", "eval_subset", "region"]).mean()
    grids = {r: np.array([[mean.get((v, s, r), np.nan) for v in variants] for s in labels]) for r in REGIONS}
    lo, hi = grid_range(grids, (0.0, 100.0))
    digits = 0 if hi - lo >= 20 else 1
    height = 0.16 * len(labels) + 0.03 * max(map(len, variants)) + 1.1  # rows, rotated column names, title
    fig, axes = plt.subplots(1, 3, figsize=(PAGE_IN, height), sharey=True, layout="constrained")
    for ax, region in zip(axes, REGIONS):
        im = annotated_grid(ax, grids[region], (lo, hi), digits, region, variants, labels)
    fig.colorbar(im, ax=axes, fraction=0.04, pad=0.02, label=f"mean Dice (%), {lo:.{digits}f} to {hi:.{digits}f}")
    fig.suptitle(f"Dice per subset, {pool.name} (mean over cases, then seeds)")
    return save(fig, stem, pool.used)


def modality_heatmap(pool: Pool, store: Store, stem: Path, et_region: str = "ET", margin: float = MARGIN) -> list[Path]:
    """Shapley value of each modality (columns) per method (rows), one panel per region, on one colour scale spanning the
    values shown; the matched marginal contribution where some subset was not scored (no Shapley value then)."""
    mv = modality_values(pool, store, et_region, margin)
    s = mv.summary
    measure = "shapley" if np.isfinite(s[s.measure == "shapley"].value).all() else "marginal"
    values = s[s.measure == measure].set_index(["variant", "region", "modality"]).value
    variants = sorted(set(s.variant), key=natural_key)
    regions = list(dict.fromkeys(s.region))
    grids = {r: np.array([[values.get((v, r, q), np.nan) for q in mv.modalities] for v in variants]) for r in regions}
    lo, hi = grid_range(grids, (0.0, 1.0))
    digits = 1 if hi - lo >= 5 else 2
    width = COLUMN_IN if len(regions) == 1 else PAGE_IN
    fig, axes = plt.subplots(1, len(regions), figsize=(width, 0.22 * len(variants) + 0.03 * max(map(len, mv.modalities)) + 1.2),
                             sharey=True, squeeze=False, layout="constrained")
    for ax, region in zip(axes[0], regions):
        im = annotated_grid(ax, grids[region], (lo, hi), digits, region, mv.modalities, variants)
    name = "Shapley value" if measure == "shapley" else "marginal contribution"
    fig.colorbar(im, ax=axes[0], fraction=0.04, pad=0.02, label=f"{name} ({mv.unit.split(';')[0]})")
    fig.suptitle(f"Modality value, {pool.name}: {name} per modality (mean over cases)")
    return save(fig, stem, pool.used)


def box_stats(values: np.ndarray) -> tuple[float, float, float, float, float] | None:
    """(first quartile, median, third quartile, lower whisker, upper whisker) as matplotlib's boxplot draws them:
    whiskers at the most extreme values within 1.5 IQR of the box; None without values."""
    if len(values) == 0:
        return None
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    iqr = q3 - q1
    inside = values[(values >= q1 - 1.5 * iqr) & (values <= q3 + 1.5 * iqr)]
    return float(q1), float(med), float(q3), float(inside.min(initial=q1)), float(inside.max(initial=q3))


def case_boxes(pool: Pool, store: Store, stem: Path, et_region: str = "ET") -> list[Path]:
    """Per-case Dice (seed-averaged) per subset: a box per column with the cases as points, one row per region.

    Boxes, whiskers and medians are drawn as one collection each per panel, and the points of a column as one
    scatter, so a pool of many columns and subsets draws in a fraction of a second."""
    d = seg_values(pool, store, "dice", et_region)
    labels = [s.label for s in canonical_subsets(d)]
    variants = [c.label for c in pool.columns if c.label in set(d.column)]
    cases = per_case(d)
    groups = {key: g.dropna().to_numpy() for key, g in cases.groupby(["region", "eval_subset", "column"], sort=True).value}
    k = len(variants)
    width = 0.8 / k
    greys = [str(0.35 + 0.6 * i / max(k - 1, 1)) for i in range(k)]
    jitter = np.random.default_rng(0)
    fig, axes = plt.subplots(3, 1, figsize=(PAGE_IN, 5.6), sharex=True, layout="constrained")
    for ax, region in zip(axes, REGIONS):
        boxes, faces, medians, whiskers = [], [], [], []
        for i, v in enumerate(variants):
            xs, ys = [], []
            for j, s in enumerate(labels):
                vals = groups.get((region, s, v), np.empty(0))
                x = j - 0.4 + width * (i + 0.5)
                b = box_stats(vals)
                if b is not None:
                    q1, med, q3, lo, hi = b
                    half = width * 0.85 / 2
                    boxes.append([(x - half, q1), (x + half, q1), (x + half, q3), (x - half, q3)])
                    faces.append(greys[i])
                    medians.append([(x - half, med), (x + half, med)])
                    whiskers += [[(x, q3), (x, hi)], [(x, q1), (x, lo)], [(x - half / 2, hi), (x + half / 2, hi)],
                                 [(x - half / 2, lo), (x + half / 2, lo)]]
                xs.append(x + jitter.uniform(-0.25, 0.25, len(vals)) * width)
                ys.append(vals)
            if xs and sum(map(len, ys)):
                ax.scatter(np.concatenate(xs), np.concatenate(ys), s=2, color="black", marker=MARKERS[i % len(MARKERS)],
                           linewidths=0, zorder=3)
        ax.add_collection(LineCollection(whiskers, colors="black", linewidths=0.5, zorder=1))
        ax.add_collection(PolyCollection(boxes, facecolors=faces, edgecolors="black", linewidths=0.5, zorder=2))
        ax.add_collection(LineCollection(medians, colors="black", linewidths=0.8, zorder=2.5))
        ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.set_ylabel(f"{region} Dice (%)")
        values = cases[cases.region == region].value.dropna()
        lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 100.0)
        pad = 0.05 * (hi - lo) if hi > lo else 0.5
        ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))
    handles = [Patch(facecolor=g, edgecolor="black", linewidth=0.5, label=v) for g, v in zip(greys, variants)]
    fig.legend(handles=handles, ncols=min(k, 4), loc="outside lower center", frameon=False)
    axes[-1].set_xticks(range(len(labels)), labels, rotation=50, ha="right")
    fig.suptitle(f"Per-case Dice, {pool.name} ({d.case_id.nunique()} cases, seed-averaged; boxes: quartiles, "
                 f"whiskers 1.5 IQR)")
    return save(fig, stem, pool.used)


def rank_blocks(pool: Pool, store: Store, et_region: str = "ET") -> pd.DataFrame:
    """Per case (rows: the independent blocks) and column: Dice averaged over seeds, subsets and regions."""
    cases = per_case(seg_values(pool, store, "dice", et_region))
    return cases.groupby(["case_id", "column"]).value.mean().unstack("column")


def cd_diagram(pool: Pool, store: Store, stem: Path, et_region: str = "ET") -> list[Path]:
    """Critical-difference diagram (Demsar 2006) of mean ranks of the columns, with cases as blocks."""
    blocks = rank_blocks(pool, store, et_region)
    if blocks.shape[1] < 3:
        raise Skip(f"a rank diagram needs >= 3 columns, found {blocks.shape[1]}")
    try:
        test = friedman_nemenyi(blocks, higher_is_better=True)
    except ValueError as e:
        raise Skip(str(e)) from None
    ranks, k = test.ranks, len(test.ranks)
    names = [f"{name} ({r:.2f})" for name, r in ranks.items()]
    longest = max(TextPath((0, 0), n, size=6).get_extents().width for n in names) / 72 + 0.3  # inches: label and leader
    width = COLUMN_IN if 2 * longest < 0.6 * COLUMN_IN else PAGE_IN
    margin = min(0.45, longest / width)
    fig = plt.figure(figsize=(width, 1.1 + 0.16 * k), layout="none")
    ax = fig.add_axes((margin, 0.02, 1 - 2 * margin, 0.72))
    ax.set_xlim(1, k)
    ax.set_ylim(0, 1.0)
    ax.axis("off")
    top = 0.92
    ax.plot([1, k], [top, top], color="black", lw=0.8)
    for r in range(1, k + 1):
        ax.plot([r, r], [top, top + 0.03], color="black", lw=0.8)
        ax.text(r, top + 0.05, str(r), ha="center", va="bottom", fontsize=6)
    half = math.ceil(k / 2)
    step = (top - 0.1) / (half + 1)
    for i, (name, r) in enumerate(zip(names, ranks)):
        left = i < half
        y = top - step * ((i if left else k - 1 - i) + 1)
        x_text = 1 - 0.03 * (k - 1) if left else k + 0.03 * (k - 1)
        ax.plot([r, r, x_text], [top, y, y], color="black", lw=0.6, clip_on=False)
        ax.text(x_text + (-0.01 if left else 0.01) * (k - 1), y, name, ha="right" if left else "left",
                va="center", fontsize=6)
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
        y = top - 0.08 - 0.05 * n
        ax.plot([values[i] - 0.02, values[j] + 0.02], [y, y], color="black", lw=2.0, solid_capstyle="round")
    fig.suptitle(f"Mean rank of Dice over {test.n_blocks} cases (blocks; 1 = best)\nFriedman p = {test.friedman_p:.3g}; "
                 f"bars: within the Nemenyi CD = {test.critical_difference:.2f} ($\\alpha$ = {test.alpha})", fontsize=7)
    return save(fig, stem, pool.used)


def sweep_curves(pool: Pool, store: Store, stem: Path, subset: str = "T1", et_region: str = "ET") -> list[Path]:
    """Mean Dice vs each swept weight (ShaSpec Fig. 4): one panel per numeric parameter, lines per region,
    a band of ± 1 std over seeds (over cases with one seed); top row: ``subset`` only, bottom: mean over subsets."""
    d = seg_values(pool, store, "dice", et_region)
    params = pd.DataFrame([store.resolved_params(c.runs[0]) for c in pool.columns], index=[c.label for c in pool.columns])
    numeric = [k for k in sorted(params.columns) if params[k].nunique() > 1 and pd.api.types.is_numeric_dtype(params[k])]
    if not numeric or len({c.method for c in pool.columns}) != 1:
        raise Skip("no numeric method parameter of one method varies across these runs (alpha/beta sweep; runs record "
                   "resolved parameters in meta.json)")
    if subset not in set(d.eval_subset):
        raise Skip(f"the sweep was not scored on subset {subset}")
    fig, axes = plt.subplots(2, len(numeric), figsize=(COLUMN_IN if len(numeric) == 1 else PAGE_IN, 4.2), squeeze=False,
                             sharey="row", layout="constrained")
    runs: set[str] = set()
    for col, key in enumerate(numeric):
        others = [k for k in params.columns if k != key and params[k].nunique() > 1]
        groups = params.groupby(others, dropna=False) if others else [((), params)]
        _, best = min(groups, key=lambda kv: (-kv[1][key].nunique(), min(kv[1].index)))
        values = sorted(best[key].unique())
        fixed = ", ".join(f"{param_name(k)} = {show(best[k].iloc[0])}" for k in others)
        sel = d[d.column.isin(best.index)].assign(x=lambda f: f.column.map(best[key]))
        runs |= set(sel.run_id)
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
                ax.plot(xs, m, marker=MARKERS[i], ls=LINES[i], color=str(0.15 * i), label=region, lw=1.0, ms=3)
                ax.fill_between(xs, m - s, m + s, color=str(0.15 * i), alpha=0.15, lw=0)
            ax.set_xticks(range(len(values)), [f"{v:g}" for v in values])
            ax.set_xlabel(param_name(key) + (f" ({fixed})" if fixed else ""))
            ax.set_title(f"{name}; band: ±1 std over {'seeds' if n_seeds > 1 else 'cases'}")
            if col == 0:
                ax.set_ylabel("mean Dice (%)")
    axes[0, 0].legend(frameon=False)
    fig.suptitle(f"Sensitivity to the loss weights, {pool.name}")
    return save(fig, stem, sorted(runs))


def pca2(x: np.ndarray) -> np.ndarray:
    """First two principal components (signs fixed: the largest loading positive), deterministic."""
    c = x - x.mean(0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    vt = vt[:2] * np.sign(vt[:2][np.arange(min(2, len(vt))), np.abs(vt[:2]).argmax(1)])[:, None]
    out = c @ vt.T
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def feature_plot(store: Store, stem: Path) -> list[Path]:
    """PCA of a trained ShaSpec's pooled shared and specific features per test case, by modality (ShaSpec's
    t-SNE figure): shared features should overlap across modalities, specific ones separate. Each panel
    gives the share of variance the modality explains beside its permutation chance level."""
    found = sorted(r.run_id for r in store.done() if (r.folder / FEATURES).exists())
    if not found:
        raise Skip(f"no run folder has {FEATURES} (ShaSpec runs write it after evaluation)")
    # The plain model of the non-dedicated protocol first, then any non-dedicated default, then the rest.
    spec = {r: store.runs[r].spec for r in found}
    run_id = min(found, key=lambda r: (spec[r].get("mode") != "non_dedicated", bool(spec[r].get("method_params")),
                                       spec[r].get("protocol") != "non_dedicated", r))
    with np.load(store.runs[run_id].folder / FEATURES, allow_pickle=False) as z:
        views = {k: z[k] for k in ("shared", "specific")}
        mods = [str(m) for m in z["modalities"]]
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_IN, 3.0), layout="constrained")
    greys = ["0.0", "0.35", "0.6", "0.8", "0.5", "0.2"]
    for ax, (name, f) in zip(axes, views.items()):
        n, m = f.shape[:2]
        x = f.reshape(n * m, -1).astype(np.float64)
        groups = np.tile(np.arange(m), n)
        z2 = pca2(x)
        for i, mod in enumerate(mods):
            sel = groups == i
            ax.scatter(z2[sel, 0], z2[sel, 1], marker=MARKERS[i % len(MARKERS)], s=14, label=mod, facecolors=greys[i % len(greys)],
                       edgecolors="black", linewidths=0.4)
        share = permutation_chance(x, groups)
        ax.set_title(f"{name} features: modality explains {100 * share.observed:.0f}% of variance\n"
                     f"(chance level {100 * share.chance:.0f}%, permutation p = {share.p:.2f})")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    axes[1].legend(frameon=False, loc="best")
    fig.suptitle(f"Pooled bottleneck features of {spec[run_id].get('method')} ({n} test cases x {m} modalities), run {run_id};\n"
                 f"chance level: the mean share over {PERMUTATIONS} random relabellings of the points")
    return save(fig, stem, [run_id])


def dao_bars(pool: Pool, store: Store, stem: Path, subset: str = "T1", et_region: str = "ET") -> list[Path]:
    """ShaSpec's DAO-loss ablation (Table 4) as bars: mean Dice per DAO loss for ET, TC and WT, tested with
    ``subset`` (left) and averaged over the subsets (right); error bars: ±1 std over seeds (over cases with one
    seed)."""
    d, loss = dao_losses(pool, store, subset, et_region)
    losses = sorted(set(loss.values()))
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_IN, 2.4), sharey=True, layout="constrained")
    width = 0.8 / len(REGIONS)
    for ax, (where, name) in zip(axes, ((d[d.eval_subset == subset], f"test {subset}"),
                                        (d, f"mean over {d.eval_subset.nunique()} subsets"))):
        for i, region in enumerate(REGIONS):
            r = where[where.region == region]
            per_seed = r.groupby(["column", "seed", "eval_subset"]).value.mean().groupby(level=["column", "seed"]).mean()
            if r.seed.nunique() > 1:
                m, s = per_seed.groupby(level="column").mean(), per_seed.groupby(level="column").std()
            else:
                pc = r.groupby(["column", "case_id"]).value.mean()
                m, s = pc.groupby(level="column").mean(), pc.groupby(level="column").std()
            m, s = m.reindex(losses), s.reindex(losses).fillna(0)
            xs = np.arange(len(losses)) - 0.4 + width * (i + 0.5)
            ax.bar(xs, m, width * 0.9, yerr=s, color=str(0.25 + 0.3 * i), edgecolor="black", linewidth=0.4, label=region,
                   hatch=("", "//", "..")[i], error_kw={"elinewidth": 0.6, "capsize": 1.5})
        ax.set_xticks(range(len(losses)), losses)
        ax.set_xlabel("DAO loss")
        ax.set_title(name)
    axes[0].set_ylabel("mean Dice (%)")
    axes[0].legend(frameon=False, ncols=3)
    fig.suptitle(f"DAO-loss ablation, {pool.name}")
    return save(fig, stem, pool.used)


def timing_bars(pool: Pool, store: Store, stem: Path) -> list[Path]:
    """Timing and memory of one budget's timing runs: median train seconds per iteration and inference seconds per
    case (whiskers: the interquartile range over the timed steps) and the peak memory, a bar per method."""
    frame = timing_values(pool, store)
    labels = list(frame.index)
    fig, axes = plt.subplots(1, 3, figsize=(PAGE_IN, 0.9 + 0.22 * len(labels)), sharey=True, layout="constrained")
    ys = np.arange(len(labels))
    for ax, (key, name) in zip(axes, (("train", "train s / iteration"), ("infer", "inference s / case"),
                                      ("memory", "peak memory (MiB)"))):
        if key == "memory":
            values = frame["memory"].to_numpy(float)
            ax.barh(ys, values, color="0.6", edgecolor="black", linewidth=0.4)
            for y, (v, measure) in enumerate(zip(values, frame["memory_measure"])):
                if np.isfinite(v):
                    ax.text(v, y, f" {v:.0f} ({measure})", va="center", fontsize=5)
        else:
            med = frame[key].to_numpy(float)
            err = np.vstack([med - frame[f"{key}_q1"].to_numpy(float), frame[f"{key}_q3"].to_numpy(float) - med])
            ax.barh(ys, med, xerr=np.nan_to_num(err), color="0.8", edgecolor="black", linewidth=0.4,
                    error_kw={"elinewidth": 0.6, "capsize": 1.5})
        ax.set_title(name)
        ax.set_yticks(ys, labels)
    axes[0].invert_yaxis()  # shared: the first method on top in every panel
    fig.suptitle(f"Timing and memory, {pool.name} (median [IQR] over the timed steps)")
    return save(fig, stem, pool.used)
