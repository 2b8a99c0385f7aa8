"""A small table model and its Markdown, LaTeX (booktabs) and CSV renderings, written byte-identically.

Every file names the run ids it came from: a comment line in Markdown and LaTeX, and a sidecar
``<stem>.runs.txt`` (one run id a line) beside the CSV, which stays a plain table for spreadsheets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

#: Presence markers of the 15-row table: filled = available, empty = missing (LaTeX: bullet, circ).
PRESENT, MISSING = "●", "○"


@dataclass
class Cell:
    """One table entry: its number (for the CSV), display text, and whether it is bold or marked."""

    value: float = math.nan
    text: str = "-"
    bold: bool = False
    mark: str = ""


@dataclass
class Row:
    """A table row: its key (the CSV index), label columns, cells, and whether a rule goes above it."""

    key: str
    labels: list[str]
    cells: list[Cell]
    rule_above: bool = False
    #: False for rows of text (e.g. a CI row): shown in Markdown and LaTeX, left out of the CSV.
    in_csv: bool = True


@dataclass
class Table:
    """Rows under a two-level header: column groups (e.g. regions) each holding named columns."""

    stem: str
    caption: str
    label_names: list[str]
    columns: list[tuple[str, str]]
    rows: list[Row] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Further numbers behind the table (tests, CIs), written as ``<stem>.<name>.csv``.
    extras: dict[str, pd.DataFrame] = field(default_factory=dict)


def fmt(value: float, digits: int) -> str:
    """Fixed-point text of a number, '-' for NaN."""
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def mean_std_text(mean: float, std: float, digits: int) -> str:
    """'m' or 'm ± s' (s only where there are several seeds)."""
    return fmt(mean, digits) if not math.isfinite(std) else f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def presence_labels(mask: tuple[bool, ...]) -> list[str]:
    """Filled / empty circles for one subset's availability flags."""
    return [PRESENT if a else MISSING for a in mask]


def _groups(columns: list[tuple[str, str]]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for g, _ in columns:
        if out and out[-1][0] == g:
            out[-1] = (g, out[-1][1] + 1)
        else:
            out.append((g, 1))
    return out


def to_markdown(t: Table) -> str:
    """GitHub Markdown: caption, table (group and column names joined in one header row), run ids."""
    head = [*t.label_names, *[f"{g} {c}".strip() for g, c in t.columns]]
    lines = [f"**{t.stem}.** {t.caption}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join(":--" if i < len(t.label_names) else "--:" for i in range(len(head))) + "|"]
    for r in t.rows:
        cells = [f"**{c.text}{c.mark}**" if c.bold else f"{c.text}{c.mark}" for c in r.cells]
        lines.append("| " + " | ".join([*r.labels, *cells]) + " |")
    lines += ["", *t.notes] if t.notes else []
    lines += ["", f"<!-- runs: {' '.join(t.runs)} -->"]
    return "\n".join(lines) + "\n"


TEX_CHARS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "{": r"\{", "}": r"\}",
             "$": r"\$", "^": r"\^{}", "~": r"\~{}", "±": r"$\pm$", "†": r"$^\dagger$", "−": "-",
             PRESENT: r"$\bullet$", MISSING: r"$\circ$"}


def _tex_text(text: str) -> str:
    """Plain text with LaTeX's special characters escaped (and ±, † as math)."""
    return "".join(TEX_CHARS.get(ch, ch) for ch in text)


def to_latex(t: Table) -> str:
    """A booktabs table: grouped header with cmidrules, a midrule where a row asks for one."""
    n_lab = len(t.label_names)
    spec = "c" * n_lab + "r" * len(t.columns)
    lines = [f"% runs: {' '.join(t.runs)}", r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{_tex_text(t.caption)}}}", rf"\label{{tab:{t.stem}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    groups = _groups(t.columns)
    if any(g for g, _ in groups):
        head, rules, col = [""] * n_lab, [], n_lab + 1
        for g, n in groups:
            head.append(rf"\multicolumn{{{n}}}{{c}}{{{_tex_text(g)}}}")
            if g:
                rules.append(rf"\cmidrule(lr){{{col}-{col + n - 1}}}")
            col += n
        lines += [" & ".join(head) + r" \\", " ".join(rules)]
    lines.append(" & ".join([*(_tex_text(n) for n in t.label_names), *(_tex_text(c) for _, c in t.columns)]) + r" \\")
    lines.append(r"\midrule")
    for r in t.rows:
        if r.rule_above:
            lines.append(r"\midrule")
        cells = []
        for c in r.cells:
            text = _tex_text(c.text) + _tex_text(c.mark)
            cells.append(rf"\textbf{{{text}}}" if c.bold else text)
        lines.append(" & ".join([*map(_tex_text, r.labels), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [rf"\par\footnotesize {_tex_text(n)}" for n in t.notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_csv(t: Table) -> str:
    """The numbers: one row per table row (index = row key), a two-level column header (group, column), or
    one level when the columns have no groups; text-only cells are empty."""
    rows = [r for r in t.rows if r.in_csv]
    grouped = any(g for g, _ in t.columns)
    frame = pd.DataFrame([[c.value for c in r.cells] for r in rows], index=[r.key for r in rows],
                         columns=pd.MultiIndex.from_tuples(t.columns) if grouped else [c for _, c in t.columns])
    return frame.to_csv(float_format="%.4f", lineterminator="\n")


def write_table(t: Table, out: Path) -> list[Path]:
    """Write ``<stem>.md``, ``.tex``, ``.csv``, ``.runs.txt`` and the extras."""
    out.mkdir(parents=True, exist_ok=True)
    files = {".md": to_markdown(t), ".tex": to_latex(t), ".csv": to_csv(t), ".runs.txt": "".join(f"{r}\n" for r in t.runs)}
    files |= {f".{name}.csv": frame.to_csv(index=False, float_format="%.6g", lineterminator="\n") for name, frame in sorted(t.extras.items())}
    paths = []
    for ext, text in files.items():
        path = out / f"{t.stem}{ext}"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
