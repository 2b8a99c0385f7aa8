"""What a report of a store holds: every table and figure its runs give (a job each), each built once and
written to a folder, and the tables a console shows. A job whose input is missing is skipped with the
reason; a job that fails is one line naming its pool, and the others are still made (`Report.failures`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from missbench.report import figures
from missbench.report.load import Store
from missbench.report.modality import MARGIN, modality_table
from missbench.report.model import Pool, Table, pools
from missbench.report.published import Refused, check_pairing, select
from missbench.report.render import write_table
from missbench.report.tables import (Skip, classification_table, cost_table, dao_table, gap_reference, gap_table, kind,
                                     published_table, seg_table, timing_table)


@dataclass(frozen=True)
class Options:
    """What make_tables writes: ET raw or post-processed, the DAO / sweep test subset, the LaTeX layout,
    published numbers of one BraTS2018 protocol (None: none), whether figures are drawn, and the margin (score
    points) of the modality-value table's monotonicity violations."""

    et: str = "ET"
    subset: str = "T1"
    latex: str = "auto"
    published: str | None = None
    figures: bool = True
    margin: float = MARGIN


@dataclass
class Job:
    """One table or figure: its name (what a message calls it), the pool it draws ('' for store-wide ones), its
    kind (the table's or figure's name: dice, hd95, heatmap, ...), whether it is a figure, and how to make it
    (a `Table`, or the figure's files; raises Skip when its input is missing)."""

    name: str
    pool: str
    kind: str
    figure: bool
    make: Callable[[], "Table | list[Path]"]


@dataclass
class Outcome:
    """What became of a job: its table or files, or why it was skipped or failed (one line)."""

    job: Job
    table: Table | None = None
    files: list[Path] = field(default_factory=list)
    skipped: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.skipped and not self.error


def one_line(error: BaseException) -> str:
    """'Type: message' on one line."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Report:
    """Every table and figure of one store, each made once: `run` makes them all (figures into ``out``),
    `write` adds the table files; the console and the site read the same outcomes."""

    def __init__(self, store: Store, opt: Options = Options(), say: Callable[[str], None] = print) -> None:
        self.store, self.opt, self.say = store, opt, say
        self.pools: list[Pool] = pools(store)
        self.kinds = {p.name: kind(p, store) for p in self.pools}
        self.outcomes: list[Outcome] = []

    # --- the jobs ------------------------------------------------------------------------------------

    def dice(self, pool: Pool) -> Table:
        """The Dice table, with the published columns of ``opt.published`` where they may stand beside these runs."""
        published = []
        if self.opt.published:
            entries = [e for e in select(self.opt.published) if e.dice]
            try:
                check_pairing(entries, pool.setting)
                published = entries
            except Refused as e:
                self.say(f"published numbers not added to dice_{pool.name}: {e}")
        return seg_table(pool, self.store, "dice", self.opt.et, published)

    def jobs(self, out: Path) -> list[Job]:
        """Every table and figure this store could give (figures drawn into ``out``)."""
        store, opt = self.store, self.opt
        seg = [p for p in self.pools if self.kinds[p.name] == "segmentation"]
        result: list[Job] = []
        for p in seg:
            result += [Job(f"dice {p.name}", p.name, "dice", False, lambda p=p: self.dice(p)),
                       Job(f"hd95 {p.name}", p.name, "hd95", False, lambda p=p: seg_table(p, store, "hd95", opt.et)),
                       Job(f"heat map {p.name}", p.name, "heatmap", True,
                           lambda p=p: figures.heatmap(p, store, out / f"fig_heatmap_{p.name}", opt.et)),
                       Job(f"box plots {p.name}", p.name, "cases", True,
                           lambda p=p: figures.case_boxes(p, store, out / f"fig_cases_{p.name}", opt.et)),
                       Job(f"rank diagram {p.name}", p.name, "ranks", True,
                           lambda p=p: figures.cd_diagram(p, store, out / f"fig_ranks_{p.name}", opt.et))]
        result += [Job(f"classification {p.name}", p.name, "classification", False, lambda p=p: classification_table(p, store))
                   for p in self.pools if self.kinds[p.name] == "classification"]
        for p in self.pools:
            if self.kinds[p.name] in ("segmentation", "classification"):
                result += [Job(f"modality value {p.name}", p.name, "modality", False,
                               lambda p=p: modality_table(p, store, opt.et, opt.margin)),
                           Job(f"modality value figure {p.name}", p.name, "modality_figure", True,
                               lambda p=p: figures.modality_heatmap(p, store, out / f"fig_modality_{p.name}", opt.et, opt.margin))]
        for p in seg:
            if p.mode == "dedicated":
                result.append(Job(f"dedicated vs non-dedicated {p.name}", p.name, "gap", False,
                                  lambda p=p: gap_table(p, gap_reference(p, seg), store, opt.et)))
        for p in seg:
            if p.mode == "non_dedicated" and len(p.columns) > 1 and len({c.method for c in p.columns}) == 1:  # one method's grid
                result += [Job(f"DAO ablation {p.name}", p.name, "dao", False, lambda p=p: dao_table(p, store, opt.subset, opt.et)),
                           Job(f"DAO ablation figure {p.name}", p.name, "dao_figure", True,
                               lambda p=p: figures.dao_bars(p, store, out / f"fig_dao_{p.name}", opt.subset, opt.et)),
                           Job(f"alpha/beta curves {p.name}", p.name, "alpha_beta", True,
                               lambda p=p: figures.sweep_curves(p, store, out / f"fig_alpha_beta_{p.name}", opt.subset, opt.et))]
        timing = [p for p in self.pools if self.kinds[p.name] == "timing"]
        for p in timing:
            result += [Job(f"timing {p.name}", p.name, "timing", False, lambda p=p: timing_table(p, store)),
                       Job(f"timing figure {p.name}", p.name, "timing_figure", True,
                           lambda p=p: figures.timing_bars(p, store, out / f"fig_timing_{p.name}"))]
        if not timing:
            result.append(Job("timing", "", "timing", False, missing("no timing runs (run: python bench.py --protocol timing "
                                                                      "--methods ...)")))
        result += [Job("run costs", "", "costs", False, lambda: cost_table(self.pools, store)),
                   Job("shared/specific features", "", "features", True, lambda: figures.feature_plot(store, out / "fig_features"))]
        if opt.published:
            result.append(Job(f"published {opt.published}", "", "published", False,
                              lambda: published_table(select(opt.published), seg, store, opt.et)))
        return result

    def run(self, out: Path) -> list[Outcome]:
        """Make every table and figure (figures into ``out``), each once; a skip or a failure is one line and the
        rest is still made. Returns (and keeps) the outcomes."""
        out.mkdir(parents=True, exist_ok=True)
        figures.setup()
        self.outcomes = []
        for job in self.jobs(out):
            if job.figure and not self.opt.figures:
                continue
            outcome = Outcome(job)
            try:
                result = job.make()
            except Skip as e:
                outcome.skipped = str(e)
                self.say(f"{job.name}: skipped ({e})")
            except Exception as e:  # noqa: BLE001 - one bad pool never stops the others
                figures.close_all()
                outcome.error = one_line(e)
                self.say(f"{job.name}: failed ({outcome.error})")
            else:
                if isinstance(result, Table):
                    outcome.table = result
                else:
                    outcome.files = list(result)
            self.outcomes.append(outcome)
        return self.outcomes

    def write(self, out: Path) -> list[Path]:
        """`run`, then every table's Markdown, LaTeX and CSV files into ``out``. Returns the files written."""
        written: list[Path] = []
        for outcome in self.run(out):
            if outcome.table is not None:
                try:
                    outcome.files = write_table(outcome.table, out, self.opt.latex)
                except Exception as e:  # noqa: BLE001
                    outcome.error = one_line(e)
                    self.say(f"{outcome.job.name}: failed ({outcome.error})")
            written += outcome.files
        return written

    # --- what was made ---------------------------------------------------------------------------------

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error]

    def of(self, pool: str, kind: str) -> Outcome | None:
        """The outcome of one pool's table or figure of a kind (None when it was not tried)."""
        return next((o for o in self.outcomes if o.job.pool == pool and o.job.kind == kind), None)

    def table(self, pool: str, kind: str) -> Table | None:
        outcome = self.of(pool, kind)
        return outcome.table if outcome else None

    def console(self) -> list[Table]:
        """The table each pool is summarised by on a console (Dice, classification scores or timing), as made."""
        out = []
        for p in self.pools:
            name = {"segmentation": "dice", "classification": "classification", "timing": "timing"}.get(self.kinds[p.name])
            table = self.table(p.name, name) if name else None
            if table is not None:
                out.append(table)
        return out

    def unplaced(self) -> list[str]:
        return unplaced(self.store, self.pools)


def missing(reason: str) -> Callable[[], Table]:
    """A job whose input the store lacks: it raises Skip with ``reason``."""
    def job() -> Table:
        raise Skip(reason)
    return job


def write_report(store: Store, out: Path, opt: Options, say: Callable[[str], None] = print) -> list[Path]:
    """Write every table and figure of ``store`` into ``out``; says what was skipped or failed and why. Returns the
    files."""
    return Report(store, opt, say).write(out)


def unplaced(store: Store, all_pools: list[Pool] | None = None) -> list[str]:
    """Runs no table mentions (a protocol, data set and budget without any finished run), with the reason."""
    placed = {r for p in (pools(store) if all_pools is None else all_pools) for r in [*p.used, *(x for lo in p.left_out for x in lo.runs)]}
    return [f"{r.run_id}: {r.why}" for r in store.runs.values() if r.run_id not in placed]
