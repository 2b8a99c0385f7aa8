"""What a report of a store holds: every table and figure its runs give (a job each; a job whose input
is missing is skipped with the reason), written to a folder, and the tables a console shows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from missbench.report import figures
from missbench.report.load import Store
from missbench.report.model import Pool, Table, pools
from missbench.report.published import Refused, check_pairing, select
from missbench.report.render import write_table
from missbench.report.tables import (Skip, classification_table, cost_table, dao_table, gap_reference, gap_table, kind,
                                     published_table, seg_table, timing_table)


@dataclass(frozen=True)
class Options:
    """What make_tables writes: ET raw or post-processed, the DAO / sweep test subset, the LaTeX layout,
    published numbers of one BraTS2018 protocol (None: none), and whether figures are drawn."""

    et: str = "ET"
    subset: str = "T1"
    latex: str = "auto"
    published: str | None = None
    figures: bool = True


#: (name, is a figure, job): a job returns a table or the figure's files, or raises Skip.
Job = tuple[str, bool, Callable[[], "Table | list[Path]"]]


def dice_job(pool: Pool, store: Store, opt: Options, say: Callable[[str], None]) -> Table:
    """The Dice table, with the published columns of ``opt.published`` where they may stand beside these runs."""
    published = []
    if opt.published:
        entries = [e for e in select(opt.published) if e.dice]
        try:
            check_pairing(entries, pool.setting)
            published = entries
        except Refused as e:
            say(f"published numbers not added to dice_{pool.name}: {e}")
    return seg_table(pool, store, "dice", opt.et, published)


def jobs(store: Store, out: Path, opt: Options, say: Callable[[str], None]) -> list[Job]:
    """Every table and figure this store could give."""
    all_pools = pools(store)
    kinds = {p.name: kind(p, store) for p in all_pools}
    seg = [p for p in all_pools if kinds[p.name] == "segmentation"]
    result: list[Job] = []
    for p in seg:
        result += [(f"dice {p.name}", False, lambda p=p: dice_job(p, store, opt, say)),
                   (f"hd95 {p.name}", False, lambda p=p: seg_table(p, store, "hd95", opt.et)),
                   (f"heat map {p.name}", True, lambda p=p: figures.heatmap(p, store, out / f"fig_heatmap_{p.name}", opt.et)),
                   (f"box plots {p.name}", True, lambda p=p: figures.case_boxes(p, store, out / f"fig_cases_{p.name}", opt.et)),
                   (f"rank diagram {p.name}", True, lambda p=p: figures.cd_diagram(p, store, out / f"fig_ranks_{p.name}", opt.et))]
    result += [(f"classification {p.name}", False, lambda p=p: classification_table(p, store))
               for p in all_pools if kinds[p.name] == "classification"]
    for p in seg:
        if p.mode == "dedicated":
            result.append((f"dedicated vs non-dedicated {p.name}", False,
                           lambda p=p: gap_table(p, gap_reference(p, seg), store, opt.et)))
    for p in seg:
        if p.mode == "non_dedicated" and len(p.columns) > 1 and len({c.method for c in p.columns}) == 1:  # one method's grid
            result += [(f"DAO ablation {p.name}", False, lambda p=p: dao_table(p, store, opt.subset, opt.et)),
                       (f"alpha/beta curves {p.name}", True,
                        lambda p=p: figures.sweep_curves(p, store, out / f"fig_alpha_beta_{p.name}", opt.subset, opt.et))]
    result += [(f"timing {p.name}", False, lambda p=p: timing_table(p, store)) for p in all_pools if kinds[p.name] == "timing"]
    if not any(kinds[p.name] == "timing" for p in all_pools):
        result.append(("timing", False, missing("no timing runs (run: python bench.py --protocol timing --methods ...)")))
    result += [("run costs", False, lambda: cost_table(all_pools, store)),
               ("shared/specific features", True, lambda: figures.feature_plot(store, out / "fig_features"))]
    if opt.published:
        result.append((f"published {opt.published}", False, lambda: published_table(select(opt.published), seg, store, opt.et)))
    return result


def missing(reason: str) -> Callable[[], Table]:
    """A job whose input the store lacks: it raises Skip with ``reason``."""
    def job() -> Table:
        raise Skip(reason)
    return job


def write_report(store: Store, out: Path, opt: Options, say: Callable[[str], None] = print) -> list[Path]:
    """Write every table and figure of ``store`` into ``out``; says what was skipped and why. Returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    figures.setup()
    written: list[Path] = []
    for name, is_figure, job in jobs(store, out, opt, say):
        if is_figure and not opt.figures:
            continue
        try:
            result = job()
        except Skip as e:
            say(f"{name}: skipped ({e})")
            continue
        written += write_table(result, out, opt.latex) if isinstance(result, Table) else result
    return written


def unplaced(store: Store) -> list[str]:
    """Runs no table mentions (a protocol, data set and budget without any finished run), with the reason."""
    placed = {r for p in pools(store) for r in [*p.used, *(x for lo in p.left_out for x in lo.runs)]}
    return [f"{r.run_id}: {r.why}" for r in store.runs.values() if r.run_id not in placed]
