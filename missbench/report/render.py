"""Renderings of a `model.Table`: console text, Markdown, LaTeX (booktabs) and CSV, written byte-identically.

Every rendering names the runs a table used and those it left out with the reason (a sidecar
``<stem>.runs.txt`` holds the used run ids, one a line). LaTeX is print-ready: every special character
escaped, and the table fits its column or page (scaled down only when wider).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd

from missbench.report.model import Cell, Table

#: LaTeX layouts: auto (a column when the table fits one, else the page, else panels: one float per column group,
#: and runs of columns within a group, as the page needs), column (``table``; panels as narrow as a column needs;
#: the page only for a panel too tall or too wide for a column), page (``table*``), split (one float per column
#: group such as ET / TC / WT, each in a column or on the page as its width needs, cut further where a group is
#: wider than the page). Widths and heights are estimated from the text; no table is scaled below MIN_SCALE of it.
LAYOUTS = ("auto", "column", "page", "split")
#: Widths (pt) of one column and of the text of a two-column article, and of a character of the table's font;
#: the height (pt) a float may take, and the height of a table row and of a line of caption or notes.
COLUMN_PT, TEXT_PT, CHAR_PT = 230.0, 470.0, 4.6
FLOAT_PT, ROW_PT, LINE_PT = 520.0, 11.0, 10.0
#: Width (pt) of a character and height of a line of the notes below a table (\footnotesize).
NOTE_CHAR_PT, NOTE_LINE_PT = 4.2, 9.5
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
             "§": r"\S{}", "∅": r"$\emptyset$", "⊆": r"$\subseteq$", "∖": r"$\setminus$", "Σ": r"$\Sigma$",
             "\"": "''", "é": r"\'e", "ö": r'\"o', "ü": r'\"u', "š": r"\v{s}"}


def tex(text: str) -> str:
    """Text with every LaTeX special character escaped (and symbols as math), so it compiles with the default
    OT1 font encoding; a character without a mapping is left as it is."""
    return "".join(TEX_CHARS.get(ch, ch) for ch in text)


#: Smallest scale the layout plans for (estimated widths are rough; tests/test_latex.py measures that no table is
#: printed below 75% of its natural size); characters of a label cell before it wraps in a parbox; characters of a
#: column head before it breaks at '[' and ','; width (pt) of a caption character at \small; caption lines allowed.
MIN_SCALE, LABEL_CHARS, HEAD_CHARS, CAPTION_CHAR_PT, CAPTION_LINES = 0.85, 26, 12, 4.6, 3


def head_lines(name: str) -> list[str]:
    """A column head as lines: broken before '[' and after each ',' when longer than HEAD_CHARS
    ('shaspec[alpha=0.1,beta=0.02]' -> 'shaspec', '[alpha=0.1,', 'beta=0.02]')."""
    if len(name) <= HEAD_CHARS or "[" not in name:
        return [name]
    first, rest = name.split("[", 1)
    parts = ("[" + rest).split(",")
    return [first, *(p + ("," if i < len(parts) - 1 else "") for i, p in enumerate(parts))]


def tex_head(name: str) -> str:
    lines = head_lines(name)
    if len(lines) == 1:
        return tex(name)
    return r"\begin{tabular}[b]{@{}r@{}}" + r"\\".join(map(tex, lines)) + r"\end{tabular}"


def tex_label(text: str) -> str:
    """A label cell; one longer than LABEL_CHARS wraps in a ragged-right parbox of that width (no package needed), with
    break points after commas and before '[' besides the underscores'."""
    if len(text) <= LABEL_CHARS:
        return tex(text)
    body = tex(text).replace(",", r",\allowbreak{}").replace("{[}", r"\allowbreak{}{[}")
    return rf"\parbox[t]{{{LABEL_CHARS * CHAR_PT:.0f}pt}}{{\raggedright {body}}}"


def label_lines(t: Table, r: int) -> int:
    """Lines the tallest label of row ``r`` takes (a wrapped one: about one per 0.8 LABEL_CHARS characters)."""
    return max([1, *(math.ceil(len(x) / (0.8 * LABEL_CHARS)) for x in t.rows[r].labels if len(x) > LABEL_CHARS)])


def natural_width(t: Table, columns: range | list[int]) -> float:
    """A rough width (pt) of the tabular with the label columns and ``columns``: characters times CHAR_PT plus padding
    (heads by their longest line, labels capped where they wrap)."""
    width = 0.0
    for i, name in enumerate(t.label_names):
        width += CHAR_PT * min(LABEL_CHARS, max([len(name), *(len(r.labels[i]) for r in t.rows)])) + 12
    for j in columns:
        width += CHAR_PT * max([*map(len, head_lines(t.columns[j][1])), *(len(cell_text(r.cells[j])) for r in t.rows)]) + 12
    return width


def float_height(t: Table, rows: list[int], width_pt: float, notes: list[str]) -> float:
    """A rough height (pt) of a float ``width_pt`` wide holding ``rows``: heads, rows (wrapped labels counted), caption
    and notes as wrapped lines."""
    heads = 2 + max((len(head_lines(c)) for _, c in t.columns), default=1)
    body = sum(label_lines(t, r) + (1 if t.rows[r].rule_above else 0) * 0.3 for r in rows)
    caption = CAPTION_LINES * LINE_PT
    text = sum(math.ceil(len(n) / (width_pt / NOTE_CHAR_PT)) for n in notes if n) * NOTE_LINE_PT
    return (heads + body) * ROW_PT + caption + text + 24


def row_chunks(t: Table, width_pt: float, notes: list[str]) -> list[list[int]]:
    """The table's rows in as few floats as keep each under FLOAT_PT (the notes below the last)."""
    out: list[list[int]] = [[]]
    for r in range(len(t.rows)):
        if out[-1] and float_height(t, [*out[-1], r], width_pt, []) > FLOAT_PT:
            out.append([])
        out[-1].append(r)
    while len(out[-1]) > 1 and float_height(t, out[-1], width_pt, notes) > FLOAT_PT:
        out.insert(len(out) - 1, out[-1][: len(out[-1]) // 2])  # make room for the notes
        out[-1] = out[-1][len(out[-2]):]
    return out


def panels(t: Table, limit_pt: float, by_group: bool) -> list[list[int]]:
    """The column indices of each panel of a table wider than ``limit_pt`` (its natural width, at MIN_SCALE): one panel
    per column group when ``by_group`` (ET, TC, WT), each group (or the whole table) cut into as few runs of columns as
    keep every panel within the limit; every panel repeats the label columns."""
    groups, start = [], 0
    for _, n in (_groups(t.columns) if by_group else [("", len(t.columns))]):
        groups.append(list(range(start, start + n)))
        start += n
    out = []
    for cols in groups:
        chunks = max(1, math.ceil(len(cols) / max(1, max_columns(t, cols, limit_pt))))
        size = math.ceil(len(cols) / chunks)  # even panels: 5 columns as 3 + 2, not 4 + 1
        while any(natural_width(t, cols[i:i + size]) > limit_pt for i in range(0, len(cols), size)) and size > 1:
            size -= 1
        out += [cols[i:i + size] for i in range(0, len(cols), size)]
    return out


def max_columns(t: Table, cols: list[int], limit_pt: float) -> int:
    """How many of ``cols``, from the first, fit beside the label columns within ``limit_pt``."""
    n = 0
    while n < len(cols) and natural_width(t, cols[:n + 1]) <= limit_pt:
        n += 1
    return max(1, n)


def latex_caption(t: Table, width_pt: float, suffix: str = "") -> str:
    r"""\caption text: the table's title (its caption when it has none) and ``suffix``, shortened to what the pool is
    when it would take more than CAPTION_LINES lines at ``width_pt`` (the rest is in the notes below the table)."""
    title = t.title or t.caption.split(". ")[0]
    per_line = width_pt / CAPTION_CHAR_PT

    def lines(text: str) -> int:
        return math.ceil((len("Table 99: ") + len(text)) / per_line)

    if lines(title + suffix) > CAPTION_LINES:
        title = title.split(":")[0].split(";")[0]
    if lines(title + suffix) > CAPTION_LINES:
        title = title[: int(CAPTION_LINES * per_line) - len(suffix) - 20].rsplit(" ", 1)[0] + " ..."
    return tex(title + suffix)


def latex_notes(t: Table) -> list[str]:
    """What goes below a LaTeX table: its full caption text, its notes, and one line on its runs (the ids and the reasons
    for those left out are in the runs files, not the float)."""
    left = sorted({r for lo in t.left_out for r in lo.runs})
    runs = f"Runs: {len(t.used)} used (ids in {t.stem}.runs.txt)"
    runs += f"; {len(left)} left out (ids and reasons in {t.stem}.left_out.txt)." if left else "; none left out."
    return [t.caption if t.title else "", *t.notes, runs]


def _tabular(t: Table, columns: list[int], rows: list[int], grouped: bool) -> list[str]:
    """A booktabs tabular of the label columns and ``columns`` for ``rows``, under a row of group names when ``grouped``."""
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
    lines += [" & ".join([*map(tex, t.label_names), *(tex_head(t.columns[j][1]) for j in columns)]) + r" \\", r"\midrule"]
    for i in rows:
        r = t.rows[i]
        if r.rule_above and i != rows[0]:
            lines.append(r"\midrule")
        cells = [tex(cell_text(r.cells[j], "")) for j in columns]
        cells = [rf"\textbf{{{c}}}" if r.cells[j].bold else c for c, j in zip(cells, columns)]
        lines.append(" & ".join([*map(tex_label, r.labels), *cells]) + r" \\")
    return lines + [r"\bottomrule", r"\end{tabular}"]


def _float(t: Table, columns: list[int], rows: list[int], grouped: bool, caption: str, label: str, notes: list[str],
           wide: bool) -> list[str]:
    """One float: caption, the tabular scaled down to the line width only when wider (never up), notes."""
    env = "table*" if wide else "table"
    lines = [rf"\begin{{{env}}}[t]", r"\centering", r"\small", r"\sloppy", rf"\caption{{{caption}}}", rf"\label{{{label}}}",
             r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%", *_tabular(t, columns, rows, grouped), "}"]
    notes = [n for n in notes if n]
    if notes:
        lines += [r"\par\raggedright\footnotesize", *(rf"{tex(n)}\par" for n in notes)]
    return lines + [rf"\end{{{env}}}"]


def to_latex(t: Table, layout: str = "auto") -> str:
    """Booktabs tables in floats that fit (``layout``, see LAYOUTS) at no less than MIN_SCALE of their natural size:
    ``table`` for a column, ``table*`` for the page. A table too wide for that is cut into panels of columns (per
    column group, ET / TC / WT, and within a group into runs of columns), one too tall into runs of rows; each is a
    float, the first with the caption, the last with the notes. Captions are the table's short title (at most
    CAPTION_LINES lines); its full caption text, notes and one line on its runs go below the table (the run ids and
    the reasons for those left out are in ``<stem>.runs.txt`` and ``<stem>.left_out.txt``)."""
    if layout not in LAYOUTS:
        raise ValueError(f"LaTeX layout {layout!r}; expected one of {list(LAYOUTS)}")
    column_limit, page_limit = COLUMN_PT / MIN_SCALE, TEXT_PT / MIN_SCALE
    notes = latex_notes(t)
    head = [f"% runs: {' '.join(t.used)}", f"% needs \\usepackage{{{','.join(TEX_PACKAGES)}}}"]
    whole = list(range(len(t.columns)))
    grouped = len(_groups(t.columns)) > 1
    limit = column_limit if layout == "column" else page_limit
    if layout == "split" and grouped:
        parts = panels(t, page_limit, by_group=True)
    elif natural_width(t, whole) <= limit:
        parts = [whole]
    else:
        parts = panels(t, limit, by_group=grouped)
    floats = []  # (columns, rows, wide, notes)
    for i, cols in enumerate(parts):
        last = i == len(parts) - 1
        wide = layout == "page" or natural_width(t, cols) > column_limit
        mine = notes if last else []
        chunks = row_chunks(t, TEXT_PT if wide else COLUMN_PT, mine)
        if len(chunks) > 1 and not wide and len(row_chunks(t, TEXT_PT, mine)) < len(chunks):
            wide, chunks = True, row_chunks(t, TEXT_PT, mine)  # too tall for a column: the page's width wraps the notes less
        floats += [(cols, rows, wide, mine if k == len(chunks) - 1 else []) for k, rows in enumerate(chunks)]
    lines = head
    for i, (cols, rows, wide, mine) in enumerate(floats):
        groups = sorted({t.columns[j][0] for j in cols}, key=[g for g, _ in t.columns].index)
        if len(floats) == 1:
            caption = latex_caption(t, TEXT_PT if wide else COLUMN_PT)
        else:
            what = ", ".join(g for g in groups if g)
            if len(rows) < len(t.rows):
                what += f"{', ' if what else ''}rows {rows[0] + 1}-{rows[-1] + 1}"
            part = f" ({what or 'columns'}; part {i + 1} of {len(floats)})"
            caption = (latex_caption(t, TEXT_PT if wide else COLUMN_PT, part) if i == 0 else
                       f"Table~\\ref{{tab:{t.stem}}} continued{tex(part)}.")
        label = f"tab:{t.stem}" if i == 0 else f"tab:{t.stem}:{i + 1}"
        lines += _float(t, cols, rows, len(floats) == 1 or len(groups) > 1, caption, label, mine, wide)  # else the caption names it
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
    """Write ``<stem>.md``, ``.tex``, ``.csv``, ``.runs.txt`` (the used run ids), ``.left_out.txt`` (each run left out,
    a tab, the reason) and the extras."""
    out.mkdir(parents=True, exist_ok=True)
    files = {".md": to_markdown(t), ".tex": to_latex(t, layout), ".csv": to_csv(t), ".runs.txt": "".join(f"{r}\n" for r in t.used),
             ".left_out.txt": "".join(f"{r}\t{lo.reason}\n" for lo in t.left_out for r in lo.runs)}
    files |= {f".{name}.csv": frame.to_csv(index=False, float_format="%.6g", lineterminator="\n")
              for name, frame in sorted(t.extras.items())}
    paths = []
    for ext, text in files.items():
        path = out / f"{t.stem}{ext}"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
