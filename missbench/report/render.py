"""Renderings of a `model.Table`: console text, Markdown, LaTeX (booktabs) and CSV, written byte-identically.

Every rendering names the runs a table used and those it left out with the reason (a sidecar
``<stem>.runs.txt`` holds the used run ids, one a line). LaTeX is print-ready: every special character
escaped, and the table fits its column or page (scaled down only when wider).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd

from missbench.report.model import Cell, Table

#: LaTeX layouts: auto (a column when the table fits one, else the page, else split where the columns have
#: groups), column (``table``, scaled down to the column; the page only when too tall for a column), page
#: (``table*``), split (one float per column group such as ET / TC / WT, each in a column or on the page as
#: its width needs). Widths and heights are estimated from the text.
LAYOUTS = ("auto", "column", "page", "split")
#: Widths (pt) of one column and of the text of a two-column article, and of a character of the table's font;
#: the height (pt) a float may take, and the height of a table row and of a line of caption or notes.
COLUMN_PT, TEXT_PT, CHAR_PT = 230.0, 470.0, 4.6
FLOAT_PT, ROW_PT, LINE_PT = 520.0, 11.0, 10.0
#: Packages the LaTeX tables need.
TEX_PACKAGES = ("booktabs", "graphicx")


def _groups(columns: list[tuple[str, str]]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for g, _ in columns:
        if out and out[-1][0] == g:
            out[-1] = (g, out[-1][1] + 1)
        else:
            out.append((g, 1))
    return out


def cell_text(c: Cell, bold: str = "*") -> str:
    """A cell's text with its mark and count; ``bold`` wraps it ('*' appends one, '**' wraps as Markdown)."""
    text = f"{c.text}{c.mark}" + (f" {c.count}" if c.count else "")
    if not c.bold:
        return text
    return f"{text}*" if bold == "*" else f"{bold}{text}{bold}"


def to_text(t: Table, width: int = 110) -> str:
    """Plain text for a console: the caption, then one block per column group (e.g. per region), stacked,
    each under its group's name with the row labels; '*' marks bold (best) cells; then notes and the runs
    used and left out."""
    out = [textwrap.fill(f"{t.stem}: {t.caption}", width)]
    start = 0
    for group, n in _groups(t.columns):
        head = [*([t.key_name] if t.key_name else t.label_names), *(c for _, c in t.columns[start:start + n])]
        body = [[*([r.key] if t.key_name else r.labels), *(cell_text(c) for c in r.cells[start:start + n])] for r in t.rows]
        n_lab = len(head) - n
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

        def line(cells: list[str]) -> str:
            return "  ".join(c.ljust(w) if i < n_lab else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "  ".join("-" * w for w in widths)
        lines = ([group] if group else []) + [line(head), rule]
        for r, b in zip(t.rows, body):
            if r.rule_above:
                lines.append(rule)
            lines.append(line(b))
        out.append("\n".join(lines))
        start += n
    bold = ["'*' marks bold (best) cells."] if any(c.bold for r in t.rows for c in r.cells) else []
    out.append("\n".join(textwrap.fill(n, width) for n in [*bold, *t.notes, *t.run_lines()]))
    return "\n\n".join(out) + "\n"


def to_markdown(t: Table) -> str:
    """GitHub Markdown: caption, table (group and column names joined in one header row), notes, runs."""
    head = [*t.label_names, *[f"{g} {c}".strip() for g, c in t.columns]]
    lines = [f"**{t.stem}.** {t.caption}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join(":--" if i < len(t.label_names) else "--:" for i in range(len(head))) + "|"]
    for r in t.rows:
        lines.append("| " + " | ".join([*r.labels, *(cell_text(c, "**") for c in r.cells)]) + " |")
    lines += ["", *(f"{n}  " for n in [*t.notes, *t.run_lines()])]
    lines += ["", f"<!-- runs: {' '.join(t.used)} -->"]
    return "\n".join(lines) + "\n"


TEX_CHARS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_\allowbreak{}", "#": r"\#", "{": r"\{",
             "}": r"\}", "$": r"\$", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}", "<": r"$<$", ">": r"$>$",
             "|": r"$|$", "[": "{[}", "]": "{]}", "±": r"$\pm$", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "−": "-",
             "–": "--", "—": "---", "×": r"$\times$", "●": r"$\bullet$", "○": r"$\circ$", "α": r"$\alpha$",
             "β": r"$\beta$", "≤": r"$\leq$", "≥": r"$\geq$", "²": r"$^2$", "·": r"$\cdot$", "→": r"$\rightarrow$",
             "§": r"\S{}", "\"": "''", "é": r"\'e", "ö": r'\"o', "ü": r'\"u', "š": r"\v{s}"}


def tex(text: str) -> str:
    """Text with every LaTeX special character escaped (and symbols as math), so it compiles with the default
    OT1 font encoding; a character without a mapping is left as it is."""
    return "".join(TEX_CHARS.get(ch, ch) for ch in text)


def natural_width(t: Table, columns: range) -> float:
    """A rough width (pt) of the tabular with the label columns and ``columns``: characters times CHAR_PT plus padding."""
    width = 0.0
    for i, name in enumerate(t.label_names):
        width += CHAR_PT * max([len(name), *(len(r.labels[i]) for r in t.rows)]) + 12
    for j in columns:
        width += CHAR_PT * max([len(t.columns[j][1]), *(len(cell_text(r.cells[j])) for r in t.rows)]) + 12
    return width


def natural_height(t: Table, width_pt: float, rows: int, notes: list[str]) -> float:
    """A rough height (pt) of a float ``width_pt`` wide: its tabular rows, caption and notes as wrapped lines."""
    per_line = width_pt / CHAR_PT
    text = sum(len(n) // per_line + 1 for n in [t.caption, *notes])
    return (rows + 3) * ROW_PT + text * LINE_PT


def _tabular(t: Table, columns: range, grouped: bool) -> list[str]:
    """A booktabs tabular of the label columns and ``columns``, under a row of group names when ``grouped``."""
    n_lab = len(t.label_names)
    spec = "l" * min(n_lab, 1) + "c" * max(n_lab - 1, 0) + "r" * len(columns)
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if grouped and any(g for g, _ in t.columns):
        head, rules, col = [""] * n_lab, [], n_lab + 1
        for g, n in _groups([t.columns[j] for j in columns]):
            head.append(rf"\multicolumn{{{n}}}{{c}}{{{tex(g)}}}")
            if g:
                rules.append(rf"\cmidrule(lr){{{col}-{col + n - 1}}}")
            col += n
        lines += [" & ".join(head) + r" \\", " ".join(rules)]
    lines += [" & ".join([*map(tex, t.label_names), *(tex(t.columns[j][1]) for j in columns)]) + r" \\", r"\midrule"]
    for r in t.rows:
        if r.rule_above:
            lines.append(r"\midrule")
        cells = [tex(cell_text(r.cells[j], "")) for j in columns]
        cells = [rf"\textbf{{{c}}}" if r.cells[j].bold else c for c, j in zip(cells, columns)]
        lines.append(" & ".join([*map(tex, r.labels), *cells]) + r" \\")
    return lines + [r"\bottomrule", r"\end{tabular}"]


def _float(t: Table, columns: range, grouped: bool, caption: str, label: str, notes: list[str], wide: bool) -> list[str]:
    """One float: caption, the tabular scaled down to the line width only when wider (never up), notes."""
    env = "table*" if wide else "table"
    lines = [rf"\begin{{{env}}}[t]", r"\centering", r"\small", r"\sloppy", rf"\caption{{{caption}}}", rf"\label{{{label}}}",
             r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%", *_tabular(t, columns, grouped), "}"]
    if notes:
        lines += [r"\par\raggedright\footnotesize", *(rf"{tex(n)}\par" for n in notes)]
    return lines + [rf"\end{{{env}}}"]


def to_latex(t: Table, layout: str = "auto") -> str:
    """Booktabs tables in floats that fit (``layout``, see LAYOUTS): ``table`` for a column, ``table*`` for the
    page; split: one float per column group (ET, TC, WT), the first with the caption, the last with the notes."""
    if layout not in LAYOUTS:
        raise ValueError(f"LaTeX layout {layout!r}; expected one of {list(LAYOUTS)}")
    groups = _groups(t.columns)
    notes = [*t.notes, *t.run_lines()]
    head = [f"% runs: {' '.join(t.used)}", f"% needs \\usepackage{{{','.join(TEX_PACKAGES)}}}"]
    whole = range(len(t.columns))
    if len(groups) > 1 and (layout == "split" or layout == "auto" and natural_width(t, whole) > TEXT_PT):
        lines, start = head, 0
        for i, (group, n) in enumerate(groups):
            block = range(start, start + n)
            caption = (tex(t.caption) + f" Block {tex(group)}; the other blocks follow." if i == 0
                       else f"{tex(group)} block of Table~\\ref{{tab:{t.stem}}}.")
            label = f"tab:{t.stem}" if i == 0 else f"tab:{t.stem}:{i + 1}"
            lines += _float(t, block, False, caption, label, notes if i == len(groups) - 1 else [],
                            natural_width(t, block) > COLUMN_PT)
            start += n
    else:
        tall = natural_height(t, COLUMN_PT, len(t.rows), notes) > FLOAT_PT
        wide = tall or natural_width(t, whole) > COLUMN_PT if layout in ("auto", "split") else tall or layout == "page"
        lines = head + _float(t, whole, True, tex(t.caption), f"tab:{t.stem}", notes, wide)
    return "\n".join(lines) + "\n"


def to_csv(t: Table) -> str:
    """The numbers: one row per table row (index = row key), a two-level column header (group, column), or
    one level when the columns have no groups; text-only cells are empty."""
    rows = [r for r in t.rows if r.in_csv]
    grouped = any(g for g, _ in t.columns)
    frame = pd.DataFrame([[c.value for c in r.cells] for r in rows], index=[r.key for r in rows],
                         columns=pd.MultiIndex.from_tuples(t.columns) if grouped else [c for _, c in t.columns])
    return frame.to_csv(float_format="%.4f", lineterminator="\n")


def write_table(t: Table, out: Path, layout: str = "auto") -> list[Path]:
    """Write ``<stem>.md``, ``.tex``, ``.csv``, ``.runs.txt`` (the used run ids) and the extras."""
    out.mkdir(parents=True, exist_ok=True)
    files = {".md": to_markdown(t), ".tex": to_latex(t, layout), ".csv": to_csv(t), ".runs.txt": "".join(f"{r}\n" for r in t.used)}
    files |= {f".{name}.csv": frame.to_csv(index=False, float_format="%.6g", lineterminator="\n")
              for name, frame in sorted(t.extras.items())}
    paths = []
    for ext, text in files.items():
        path = out / f"{t.stem}{ext}"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
