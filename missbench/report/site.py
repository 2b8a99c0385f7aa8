"""The results site: a folder of HTML, JSON and figures that opens from file:// with no server and no network.

    index.html            every protocol, data set and budget of the store with the runs used and left out;
                          the modality-value tables (links into the pool pages);
                          every table (a page per pool), the ledger, the runs no table holds, what could not be
                          made, and every table and figure file (Markdown, LaTeX, CSV, PDF, PNG)
    pools/<pool>.html     a pool's leaderboard (Avg over the subsets per region, its CI where the cases allow,
                          published rows of the pool's BraTS2018 protocol beside, tagged), its full tables
                          (sortable; every number links to its run), comparability key, notes, figures (PNG with
                          the PDF to download) and the runs left out with the reason; pools/<pool>.json its data
    ledger.html           the reproduction ledger per BraTS2018 protocol (missbench.report.ledger)
    runs/<run>.html       a page per run (score): spec, resolved parameters, provenance, the training curve from
                          the model's log.txt, its scores, links to its files in the store; runs/<run>.json
    site.json             the index as data;  assets/  the style sheet and the sorting script (no framework)

Everything is sorted and nothing records the time, so a rebuild of the same store is byte-identical. Links to the
store's own files (rows, checkpoints, logs) are relative: they work where the store keeps its place beside the site.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from missbench.report.ledger import Ledger, harness_method, ledgers
from missbench.report.load import Run
from missbench.report.model import Pool, Table, comparability_key, flatten, group_of, show
from missbench.report.published import Published, brats_protocol
from missbench.report.render import cell_text
from missbench.report.tables import REGIONS, CLASSIFICATION_SCORES
from missbench.report.write import Report
from missbench.store.run_folder import (CHECKPOINT, DONE, FAILED, FEATURES, LEGACY_SPEC, LOG, META, MODEL, PROFILE, REQUEST,
                                        ROWS, SCORE)

#: Files of a model folder and of a score folder that a run page links, when present.
MODEL_FILES = (MODEL, LEGACY_SPEC, REQUEST, META, LOG, CHECKPOINT, PROFILE, DONE, FAILED)
SCORE_FILES = (SCORE, ROWS, META, FEATURES, PROFILE, DONE, FAILED)
#: A training log line (missbench/engine/train.py): iteration, learning rate and the loss terms.
LOG_LINE = re.compile(r"\biteration (\d+) lr (\S+) \{(.*)\}\s*$")
LOSS_TERM = re.compile(r"'([^']+)':\s*([-+0-9.eE]+|nan|inf|-inf)")

CSS = """\
:root { --ink: #1b1b1b; --mute: #5b5b5b; --rule: #c9c9c9; --band: #f3f3f3; --link: #0b4f8a; --best: #000; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1280px; padding: 0 1.2rem 3rem; }
header.top { display: flex; gap: 1.2rem; align-items: baseline; border-bottom: 2px solid var(--ink); padding: .6rem 0; margin-bottom: 1rem; }
header.top a { color: var(--ink); font-weight: 600; text-decoration: none; }
h1 { font-size: 1.5rem; margin: .4rem 0 .6rem; word-break: break-all; }
h2 { font-size: 1.15rem; margin: 1.8rem 0 .5rem; border-bottom: 1px solid var(--rule); padding-bottom: .2rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
a { color: var(--link); }
p.caption, p.note, .mute { color: var(--mute); font-size: .86rem; max-width: 100ch; }
.scroll { overflow-x: auto; margin: .4rem 0; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: .84rem; }
th, td { padding: .18rem .5rem; border-bottom: 1px solid var(--rule); text-align: right; white-space: nowrap; vertical-align: top; }
th { background: var(--band); font-weight: 600; }
th.l, td.l { text-align: left; }
td.wrap { white-space: normal; text-align: left; max-width: 70ch; }
thead th.group { text-align: center; border-bottom: 1px solid var(--ink); }
table.sortable thead tr:last-child th { cursor: pointer; user-select: none; }
table.sortable thead tr:last-child th::after { content: " \\2195"; color: #aaa; font-weight: 400; }
table.sortable thead tr:last-child th[aria-sort="ascending"]::after { content: " \\2191"; color: var(--ink); }
table.sortable thead tr:last-child th[aria-sort="descending"]::after { content: " \\2193"; color: var(--ink); }
tfoot td, tfoot th { border-top: 2px solid var(--ink); background: #fafafa; }
td.best { font-weight: 700; color: var(--best); }
td a { text-decoration: none; color: inherit; border-bottom: 1px dotted #8aa; }
td a:hover { color: var(--link); }
tr.published td { font-style: italic; color: #38465a; background: #f5f8fc; }
.tag { display: inline-block; font-size: .72rem; font-style: normal; padding: 0 .35rem; border: 1px solid #8a9bb5;
       border-radius: .6rem; margin-left: .3rem; }
.state-done { color: #1d5e2b; } .state-failed, .state-corrupt { color: #8a1c1c; } .state-stopped, .state-pending, .state-running { color: #7a5a00; }
pre { background: var(--band); padding: .6rem; overflow-x: auto; font-size: .78rem; max-height: 28rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid var(--rule); }
figcaption { font-size: .84rem; color: var(--mute); }
svg.curve text { font: 11px system-ui, sans-serif; fill: var(--ink); }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem; font-size: .86rem; }
dl.kv dt { color: var(--mute); } dl.kv dd { margin: 0; word-break: break-all; }
footer { margin-top: 3rem; color: var(--mute); font-size: .8rem; border-top: 1px solid var(--rule); padding-top: .5rem; }
@media print { header.top, table.sortable thead th::after { display: none; } .scroll { overflow: visible; } }
"""

JS = """\
// Sortable tables: a click on a column head (the last head row) sorts the body rows by that column, numbers by
// their data-v value and other cells by their text; a second click reverses. Footer rows (Avg, CI) stay below.
(function () {
  "use strict";
  function key(cell) {
    if (!cell) return [2, ""];
    var v = cell.getAttribute("data-v");
    if (v !== null && v !== "" && !isNaN(parseFloat(v))) return [0, parseFloat(v)];
    var t = cell.textContent.trim();
    return t === "" || t === "-" ? [2, ""] : [1, t];
  }
  function sort(table, index, head) {
    var body = table.tBodies[0];
    if (!body) return;
    var rows = Array.prototype.slice.call(body.rows);
    var descending = head.getAttribute("aria-sort") !== "descending";
    var keyed = rows.map(function (row, i) { return [key(row.cells[index]), i, row]; });
    keyed.sort(function (a, b) {
      var x = a[0], y = b[0];
      if (x[0] !== y[0]) return x[0] - y[0];            // numbers, then text, then empty cells
      var c = x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0;
      if (descending) c = -c;
      return c !== 0 ? c : a[1] - b[1];                  // stable
    });
    keyed.forEach(function (k) { body.appendChild(k[2]); });
    var heads = head.parentNode.children;
    for (var i = 0; i < heads.length; i++) heads[i].removeAttribute("aria-sort");
    head.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  function init() {
    var tables = document.querySelectorAll("table.sortable");
    Array.prototype.forEach.call(tables, function (table) {
      var rows = table.tHead ? table.tHead.rows : [];
      if (!rows.length) return;
      var heads = rows[rows.length - 1].cells;
      Array.prototype.forEach.call(heads, function (head, index) {
        head.tabIndex = 0;
        head.title = "sort by this column";
        head.addEventListener("click", function () { sort(table, index, head); });
        head.addEventListener("keydown", function (e) { if (e.key === "Enter") sort(table, index, head); });
      });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
"""


# --- small helpers -----------------------------------------------------------------------------------

def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def plain(obj: Any) -> Any:
    """JSON-safe data: NaN and infinities as null, tuples as lists, numpy scalars as Python's, keys as text."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [plain(v) for v in obj]
        return sorted(items, key=str) if isinstance(obj, (set, frozenset)) else items
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int)):
        return obj
    return str(obj)


def dump(obj: Any) -> str:
    """Compact JSON with sorted keys (the C encoder: a thousand run files in a fraction of a second)."""
    return json.dumps(plain(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n"


def page_name(run_id: str) -> str:
    """A run's page file name (without suffix): its key with '/' as '--'."""
    return run_id.replace("/", "--")


def run_href(run_id: str, up: str) -> str:
    return f"{up}runs/{quote(page_name(run_id))}.html"


def pool_href(pool: str, up: str) -> str:
    return f"{up}pools/{quote(pool)}.html"


def num(value: Any) -> str:
    """A number for data-v (sorting): repr of a finite float, else empty."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return ""
    return repr(round(v, 6)) if math.isfinite(v) else ""


def fnum(value: float, digits: int = 2, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def linked(text: str, runs: tuple[str, ...], up: str) -> str:
    """``text`` as a link to the first of ``runs`` (the page lists the rest), plain when there are none."""
    if not runs:
        return esc(text)
    title = runs[0] if len(runs) == 1 else f"{len(runs)} runs: {', '.join(runs[:6])}{', ...' if len(runs) > 6 else ''}"
    return f'<a href="{run_href(runs[0], up)}" title="{esc(title)}">{esc(text)}</a>'


def document(title: str, body: str, up: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{esc(title)}</title>\n'
            f'<link rel="icon" href="data:,">\n<link rel="stylesheet" href="{up}assets/style.css">\n'
            f'<script src="{up}assets/sort.js" defer></script>\n</head>\n<body>\n'
            f'<header class="top"><a href="{up}index.html">MissBench results</a><a href="{up}ledger.html">Reproduction ledger</a>'
            f'</header>\n<main>\n{body}\n</main>\n<footer>Written by analysis/make_tables.py --site from the results store; '
            f'opens from file:// with no server and no network.</footer>\n</body>\n</html>\n')


def simple_table(head: list[str], rows: list[list[str]], left: int = 1, sortable: bool = True, values: list[list[str]] | None = None,
                 cls: list[str] | None = None, wrap: tuple[int, ...] = ()) -> str:
    """An HTML table of pre-escaped cells: the first ``left`` columns left-aligned, the columns ``wrap`` wrapped (long
    text); ``values``: data-v per cell (what sorting compares)."""
    ths = "".join(f'<th class="{"l" if i < left or i in wrap else ""}">{h}</th>' for i, h in enumerate(head))
    body = []
    for r, row in enumerate(rows):
        tds = []
        for i, c in enumerate(row):
            v = values[r][i] if values and i < len(values[r]) else ""
            attr = f' data-v="{v}"' if v else ""
            klass = "wrap" if i in wrap else "l" if i < left else ""
            tds.append(f'<td class="{klass}"{attr}>{c}</td>')
        klass = f' class="{cls[r]}"' if cls and cls[r] else ""
        body.append(f"<tr{klass}>{''.join(tds)}</tr>")
    return (f'<div class="scroll"><table class="{"sortable" if sortable else ""}"><thead><tr>{ths}</tr></thead>'
            f'<tbody>\n{chr(10).join(body)}\n</tbody></table></div>')


# --- tables ------------------------------------------------------------------------------------------

def footer_row(t: Table, key: str) -> bool:
    """Rows that stay below a sorted body: a subset table's Avg and CI rows."""
    return bool(t.key_name) and (key == "Avg" or key.startswith("Avg "))


def table_html(t: Table, up: str) -> str:
    """A `Table` as a sortable HTML table (a subset table's Avg and CI rows in the footer), every number linked to its
    runs, with its caption, notes and the runs it used and left out."""
    n_lab = len(t.label_names) + (1 if t.key_name else 0)
    grouped = any(g for g, _ in t.columns)
    head = []
    if grouped:
        cells = [f'<th colspan="{n_lab}"></th>']
        start = 0
        groups: list[tuple[str, int]] = []
        for g, _ in t.columns:
            if groups and groups[-1][0] == g:
                groups[-1] = (g, groups[-1][1] + 1)
            else:
                groups.append((g, 1))
        for g, n in groups:
            cells.append(f'<th class="group" colspan="{n}">{esc(g)}</th>')
            start += n
        head.append(f"<tr>{''.join(cells)}</tr>")
    names = ([t.key_name] if t.key_name else []) + t.label_names
    head.append("<tr>" + "".join(f'<th class="l">{esc(n)}</th>' for n in names)
                + "".join(f"<th>{esc(c)}</th>" for _, c in t.columns) + "</tr>")
    body, foot = [], []
    for r in t.rows:
        labels = ([r.key] if t.key_name else []) + r.labels
        cells = [f'<th class="l" scope="row">{esc(x)}</th>' if i == 0 else f'<td class="l">{esc(x)}</td>' for i, x in enumerate(labels)]
        for c in r.cells:
            attr = f' data-v="{num(c.value)}"' if num(c.value) else ""
            klass = ' class="best"' if c.bold else ""
            cells.append(f"<td{attr}{klass}>{linked(cell_text(c, ''), c.runs, up)}</td>")
        (foot if footer_row(t, r.key) else body).append(f"<tr>{''.join(cells)}</tr>")
    out = [f'<div class="scroll"><table class="sortable" id="{esc(t.stem)}"><thead>{"".join(head)}</thead>',
           f"<tbody>\n{chr(10).join(body)}\n</tbody>"]
    if foot:
        out.append(f"<tfoot>{''.join(foot)}</tfoot>")
    out.append("</table></div>")
    out.append(f'<p class="caption">{esc(t.caption)}</p>')
    if any(c.bold for r in t.rows for c in r.cells):
        out.append('<p class="note">Bold: the best displayed value (as the caption says).</p>')
    out += [f'<p class="note">{esc(n)}</p>' for n in t.notes]
    return "\n".join(out)


def table_data(t: Table) -> dict[str, Any]:
    return {"stem": t.stem, "caption": t.caption, "title": t.title, "label_names": t.label_names, "columns": t.columns,
            "notes": t.notes, "used": t.used, "left_out": [{"runs": lo.runs, "reason": lo.reason} for lo in t.left_out],
            "rows": [{"key": r.key, "labels": r.labels, "cells": [{"value": c.value, "text": c.text, "bold": c.bold, "mark": c.mark,
                                                                   "count": c.count, "runs": c.runs} for c in r.cells]}
                     for r in t.rows]}


# --- leaderboards ------------------------------------------------------------------------------------

def seg_leaderboard(t: Table, pool: Pool, published: list[Published]) -> list[dict[str, Any]]:
    """Per column of a Dice table: the Avg over the subsets per region (mean ± std over seeds), its CI where the
    cases allow, the mean over the regions, seeds and cases; then the published rows of the pool's protocol."""
    avg = next((r for r in t.rows if r.key == "Avg"), None)
    ci = next((r for r in t.rows if r.key == "Avg 95% CI"), None)
    if avg is None:
        return []
    runs = {c.label: c.runs for c in pool.columns}
    out = []
    for label in [c for reg, c in t.columns if reg == REGIONS[0] and c in runs]:
        entry: dict[str, Any] = {"label": label, "kind": "measured", "runs": runs[label], "regions": {}}
        for reg in REGIONS:
            j = t.columns.index((reg, label))
            cell = avg.cells[j]
            entry["regions"][reg] = {"value": cell.value, "text": cell.text, "ci": ci.cells[j].text if ci else "",
                                     "seeds": cell.seeds, "cases": cell.cases}
        values = [entry["regions"][r]["value"] for r in REGIONS]
        entry["mean"] = float(np.mean(values)) if all(math.isfinite(v) for v in values) else math.nan
        entry["seeds"] = max(entry["regions"][r]["seeds"] for r in REGIONS)
        entry["cases"] = max(entry["regions"][r]["cases"] for r in REGIONS)
        out.append(entry)
    ranked = sorted((e for e in out if math.isfinite(e["mean"])), key=lambda e: (-e["mean"], e["label"]))
    for i, e in enumerate(ranked):
        e["rank"] = i + 1
    for p in published:
        regions = {reg: {"value": p.average[reg], "text": f"{p.average[reg]:.2f}", "ci": "", "seeds": 0, "cases": 0}
                   for reg in REGIONS}
        out.append({"label": p.label, "kind": "published", "protocol": p.protocol, "citation": p.citation, "id": p.id,
                    "runs": (), "regions": regions, "mean": float(np.mean([p.average[r] for r in REGIONS])), "seeds": 0, "cases": 0})
    return sorted(out, key=lambda e: (-e["mean"] if math.isfinite(e["mean"]) else math.inf, e["kind"], e["label"]))


def seg_leaderboard_html(board: list[dict[str, Any]], up: str, protocol: str | None) -> str:
    head = ["rank", "column", *(f"{r} Avg" for r in REGIONS), "mean", "seeds", "cases", "source"]
    rows, values, cls = [], [], []
    for e in board:
        published = e["kind"] == "published"
        source = (f'published<span class="tag">protocol {esc(e["protocol"])}</span>' if published else
                  "measured" + (f'<span class="tag">protocol {esc(protocol)}</span>' if protocol else ""))
        label = esc(e["label"]) if published else linked(e["label"], e["runs"], up)
        if not published and len(e["runs"]) > 1:
            label += " " + " ".join(f'<a class="mute" href="{run_href(r, up)}">{i + 1}</a>' for i, r in enumerate(e["runs"][:12]))
        cells = [str(e.get("rank", "")) or "-", label]
        vals = [str(e.get("rank", "")), ""]
        for reg in REGIONS:
            x = e["regions"][reg]
            ci = f'<br><span class="mute">{esc(x["ci"])}</span>' if x["ci"] else ""
            cells.append((esc(x["text"]) if published else linked(x["text"], e["runs"], up)) + ci)
            vals.append(num(x["value"]))
        cells += [fnum(e["mean"]), str(e["seeds"] or "-"), str(e["cases"] or "-"),
                  source + (f'<br><span class="mute">{esc(e["citation"])}</span>' if published else "")]
        vals += [num(e["mean"]), num(e["seeds"]), num(e["cases"]), ""]
        rows.append(cells)
        values.append(vals)
        cls.append("published" if published else "")
    note = ("Ranked by the mean of the ET, TC and WT averages over the subsets (Dice %, mean ± std over seeds; below it the "
            "95% bootstrap CI over patients, or n=cases where too few cases allow one). ")
    if protocol:
        note += (f"Published rows are numbers reported in papers for BraTS2018 protocol {protocol} (the protocol of these runs; "
                 "protocol A and B rows never share a ranking); they are not measured here and take no rank.")
    return simple_table(head, rows, left=2, values=values, cls=cls) + f'<p class="note">{esc(note)}</p>'


def classification_leaderboard(t: Table, pool: Pool) -> list[dict[str, Any]]:
    """Per column of a classification table: each score's mean over the table's rows (rates, conditions)."""
    runs = {c.label: c.runs for c in pool.columns}
    out = []
    for label in [c for g, c in t.columns if g == t.columns[0][0] and c in runs]:
        scores = {}
        for _, name in CLASSIFICATION_SCORES:
            j = t.columns.index((name, label))
            values = [r.cells[j].value for r in t.rows if math.isfinite(r.cells[j].value)]
            scores[name] = float(np.mean(values)) if values else math.nan
        out.append({"label": label, "runs": runs[label], "scores": scores})
    first = CLASSIFICATION_SCORES[0][1]
    out.sort(key=lambda e: (-e["scores"][first] if math.isfinite(e["scores"][first]) else math.inf, e["label"]))
    for i, e in enumerate(out):
        e["rank"] = i + 1
    return out


def classification_leaderboard_html(board: list[dict[str, Any]], up: str) -> str:
    head = ["rank", "column", *(name for _, name in CLASSIFICATION_SCORES)]
    rows = [[str(e["rank"]), linked(e["label"], e["runs"], up), *(linked(fnum(e["scores"][n]), e["runs"], up)
                                                                  for _, n in CLASSIFICATION_SCORES)] for e in board]
    values = [[str(e["rank"]), "", *(num(e["scores"][n]) for _, n in CLASSIFICATION_SCORES)] for e in board]
    return (simple_table(head, rows, left=2, values=values)
            + '<p class="note">Ranked by accuracy: each score averaged over the rows of the table below (missing rates, '
              'conditions), each row a mean over seeds.</p>')


# --- training curves -----------------------------------------------------------------------------------

def training_curve(log: Path) -> list[dict[str, Any]]:
    """The loss terms and learning rate by iteration from a model's log.txt (the last attempt's value where a resumed
    run logged an iteration twice), sorted by iteration."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    points: dict[int, dict[str, Any]] = {}
    for line in text.splitlines():
        m = LOG_LINE.search(line)
        if not m:
            continue
        try:
            lr = float(m.group(2))
        except ValueError:
            lr = math.nan
        points[int(m.group(1))] = {"iteration": int(m.group(1)), "lr": lr,
                                   "losses": {k: float(v) for k, v in LOSS_TERM.findall(m.group(3))}}
    return [points[i] for i in sorted(points)]


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values spanning [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(n - 1, 1)
    step = 10 ** math.floor(math.log10(raw))
    step = next(s * step for s in (1, 2, 2.5, 5, 10) if s * step >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    out, v = [], start
    while v <= hi + 1e-9 * step:
        out.append(round(v, 12))
        v += step
    return out


def curve_svg(points: list[dict[str, Any]]) -> str:
    """A line chart (inline SVG, no script) of every loss term against the iteration; greys and dash patterns, so it
    reads in print."""
    terms = sorted({k for p in points for k in p["losses"]}, key=lambda k: (k != "total", k))
    series = {k: [(p["iteration"], p["losses"][k]) for p in points if k in p["losses"] and math.isfinite(p["losses"][k])]
              for k in terms}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return '<p class="mute">No finite loss was logged.</p>'
    width, height, left, right, top, bottom = 680, 260, 58, 120, 12, 36
    xs = [x for v in series.values() for x, _ in v]
    ys = [y for v in series.values() for _, y in v]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def py(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)

    out = [f'<svg class="curve" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'role="img" aria-label="training losses by iteration">',
           f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" fill="none" stroke="#999"/>']
    for t in ticks(y0, y1):
        out.append(f'<line x1="{left - 4}" x2="{width - right}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#e4e4e4"/>'
                   f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    for t in ticks(x0, x1):
        if float(t).is_integer():
            out.append(f'<text x="{px(t):.1f}" y="{height - bottom + 16}" text-anchor="middle">{int(t)}</text>')
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 4}" text-anchor="middle">iteration</text>')
    shades = ("#000000", "#555555", "#888888", "#222222", "#777777", "#444444")
    dashes = ("", "6 3", "2 2", "8 3 2 3", "1 3", "4 4")
    for i, (k, v) in enumerate(series.items()):
        points_text = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in v)
        style = f'stroke="{shades[i % 6]}" stroke-width="1.6" fill="none"' + (f' stroke-dasharray="{dashes[i % 6]}"' if dashes[i % 6] else "")
        out.append(f'<polyline points="{points_text}" {style}><title>{esc(k)}</title></polyline>')
        if len(v) < 25:
            out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2" fill="{shades[i % 6]}"/>' for x, y in v]
        ly = top + 14 + 16 * i
        out.append(f'<line x1="{width - right + 10}" x2="{width - right + 34}" y1="{ly - 4}" y2="{ly - 4}" {style}/>'
                   f'<text x="{width - right + 38}" y="{ly}">{esc(k)}</text>')
    out.append("</svg>")
    return "".join(out)


# --- the site ------------------------------------------------------------------------------------------

class Site:
    """Writes the site of one `Report` (already run) into ``root``, linking the table and figure files in ``tables``."""

    def __init__(self, report: Report, root: Path, tables: Path) -> None:
        self.report, self.store, self.root = report, report.store, root
        #: What could not be made, one line each (a page whose data broke it; the others are still written).
        self.errors: list[str] = []
        self.written: list[Path] = []
        self.tables_href = Path(os.path.relpath(tables.resolve(), root.resolve())).as_posix()
        self.files: dict[Path, str] = {}
        self.runs_dir = os.path.abspath(root / "runs")
        self.pools = report.pools
        self.used_in: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self.left_in: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for p in self.pools:
            for c in p.columns:
                for r in c.runs:
                    self.used_in[r].append((p.name, c.label))
            for lo in p.left_out:
                for r in lo.runs:
                    self.left_in[r].append((p.name, lo.reason))
        self.siblings = {r: c.runs for p in self.pools for c in p.columns for r in c.runs}
        self.published, self.ledgers = ledgers(self.pools, self.store, report.kinds, report.opt.et, self.errors)

    def put(self, rel: str, text: str) -> None:
        self.files[self.root / rel] = text

    def table_file(self, name: str, up: str) -> str:
        return f"{up}{quote(self.tables_href)}/{quote(name)}"

    # --- index -----------------------------------------------------------------------------------------

    def counts(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Runs per protocol, data set and budget: all, used in some table, left out of every table (with reasons)."""
        used = {r for p in self.pools for r in p.used}
        out: dict[str, dict[str, dict[str, Any]]] = {"protocol": {}, "dataset": {}, "budget": {}}
        for run in self.store.runs.values():
            protocol, dataset, budget = group_of(run) if run.spec else ("(unknown spec)",) * 3
            for axis, value in (("protocol", protocol), ("dataset", dataset), ("budget", budget)):
                c = out[axis].setdefault(value, {"runs": 0, "used": 0, "left_out": 0, "states": {}})
                c["runs"] += 1
                c["used" if run.run_id in used else "left_out"] += 1
                c["states"][run.state] = c["states"].get(run.state, 0) + 1
        return {axis: dict(sorted(v.items())) for axis, v in out.items()}

    def index(self) -> None:
        store, report = self.store, self.report
        states: dict[str, int] = {}
        for r in store.runs.values():
            states[r.state] = states.get(r.state, 0) + 1
        body = ["<h1>Results</h1>",
                f'<p>{len(store.runs)} runs (scores) in the store: {esc(", ".join(f"{n} {s}" for s, n in sorted(states.items())))}; '
                f'{len(self.pools)} tables of comparable runs. Every number links to its run.</p>']
        rows, values = [], []
        for p in self.pools:
            left = sorted({r for lo in p.left_out for r in lo.runs})
            rows.append([f'<a href="{pool_href(p.name, "")}">{esc(p.name)}</a>', esc(p.protocol), esc(p.dataset), esc(p.budget),
                         esc(", ".join(f"{k}={show(v)}" for k, v in p.suffix.items()) or "main"),
                         esc(report.kinds.get(p.name) or "-"), str(len(p.columns)), str(len(p.used)), str(len(left))])
            values.append(["", "", "", "", "", "", num(len(p.columns)), num(len(p.used)), num(len(left))])
        body += ["<h2>Tables</h2>", '<p class="note">One table per protocol, data set, budget and setting (runs whose setting '
                 'differs get a table of their own, named by the difference); columns are methods with their parameters.</p>',
                 simple_table(["table", "protocol", "data set", "budget", "setting", "kind", "columns", "runs used", "left out"],
                              rows, left=6, values=values)]
        made = [o for o in report.outcomes if o.job.kind == "modality" and o.table is not None]
        body.append("<h2>Modality value</h2>")
        if made:
            body += ['<p class="note">What adding each modality does to a model\'s score, from the stored per-case scores: the '
                     'matched marginal contribution, the Shapley value over the modality lattice and the rate of monotonicity '
                     'violations, each with a paired case-bootstrap CI (a table and a heat map per pool).</p>',
                     "<ul>" + "".join(f'<li><a href="{pool_href(o.job.pool, "")}#t-modality">{esc(o.job.pool)}</a></li>'
                                      for o in made) + "</ul>"]
        else:
            body.append("<p>None: no pool scores a model on a subset and on that subset plus one modality.</p>")
        counts = self.counts()
        for axis, title in (("protocol", "Protocols"), ("dataset", "Data sets"), ("budget", "Budgets")):
            rows = [[esc(k), str(c["runs"]), str(c["used"]), str(c["left_out"]),
                     esc(", ".join(f"{n} {s}" for s, n in sorted(c["states"].items())))] for k, c in counts[axis].items()]
            values = [["", num(c["runs"]), num(c["used"]), num(c["left_out"]), ""] for c in counts[axis].values()]
            body += [f"<h2>{title}</h2>", simple_table([axis, "runs", "used in a table", "left out of every table", "states"],
                                                       rows, values=values)]
        body.append("<h2>Reproduction ledger</h2>")
        if self.ledgers:
            body.append("<ul>" + "".join(f'<li><a href="ledger.html#{esc(lg.pool.name)}">{esc(lg.pool.name)}</a>: BraTS2018 '
                                         f"protocol {esc(lg.protocol)}, {len(lg.bias)} published entries matched</li>"
                                         for lg in self.ledgers) + "</ul>")
        else:
            body.append('<p>No runs of BraTS2018 protocol A or B share a method with the published numbers; the '
                        '<a href="ledger.html">ledger</a> lists the published numbers.</p>')
        unplaced = report.unplaced()
        body.append("<h2>Runs in no table</h2>")
        if unplaced:
            items = []
            for line in unplaced:
                run_id, why = line.split(": ", 1)
                items.append(f'<li><a href="{run_href(run_id, "")}">{esc(run_id)}</a>: {esc(why)}</li>')
            body.append("<ul>" + "".join(items) + "</ul>")
        else:
            body.append("<p>None: every run is used by a table or listed as left out of one.</p>")
        problems = [o for o in report.outcomes if o.error or o.skipped]
        body.append("<h2>Tables, figures and pages not made</h2>")
        items = [f"<li>{esc(o.job.name)}: {'failed' if o.error else 'skipped'} ({esc(o.error or o.skipped)})</li>" for o in problems]
        items += [f"<li>{esc(line)}</li>" for line in self.errors]
        body.append("<ul>" + "".join(items) + "</ul>" if items else "<p>None.</p>")
        rows = []
        for o in report.outcomes:
            if not o.files:
                continue
            stem = min((f.name for f in o.files), key=len).split(".")[0]
            links = " · ".join(f'<a href="{self.table_file(f.name, "")}">{esc(f.name[len(stem) + 1:] or f.name)}</a>'
                               for f in sorted(o.files, key=lambda f: (f.name.count("."), f.name)))
            where = f'<a href="{pool_href(o.job.pool, "")}">{esc(o.job.pool)}</a>' if o.job.pool else "the whole store"
            rows.append([esc(stem), esc(o.job.kind), where, links])
        body += ["<h2>Files</h2>", f'<p class="note">Markdown, LaTeX and CSV of every table and PDF / PNG of every figure, in '
                 f'<a href="{quote(self.tables_href)}/">{esc(self.tables_href)}/</a>; each names the runs it used in its .runs.txt '
                 f'and those it left out, with the reason, in its .left_out.txt.</p>',
                 simple_table(["file stem", "kind", "pool", "files"], rows, left=4)]
        self.put("index.html", document("MissBench results", "\n".join(body), ""))
        self.put("site.json", dump({
            "runs": {r.run_id: {"state": r.state, "why": r.why if not r.done else "", "page": f"runs/{page_name(r.run_id)}.html"}
                     for r in store.runs.values()},
            "pools": [{"name": p.name, "protocol": p.protocol, "dataset": p.dataset, "budget": p.budget, "kind": report.kinds.get(p.name),
                       "setting": p.setting, "suffix": p.suffix, "page": f"pools/{p.name}.html", "used": p.used,
                       "left_out": [{"runs": lo.runs, "reason": lo.reason} for lo in p.left_out]} for p in self.pools],
            "counts": counts,
            "not_made": [{"job": o.job.name, "pool": o.job.pool, "error": o.error, "skipped": o.skipped} for o in problems],
            "site_errors": self.errors,
            "ledgers": [lg.pool.name for lg in self.ledgers]}))

    # --- pools -----------------------------------------------------------------------------------------

    def pool_page(self, p: Pool) -> None:
        up = "../"
        report = self.report
        kind = report.kinds.get(p.name, "")
        protocol = brats_protocol(p.setting)
        body = [f"<h1>{esc(p.name)}</h1>",
                f'<p class="caption">protocol {esc(p.protocol)} ({esc(p.mode or "-")}), data set {esc(p.dataset)}, budget '
                f'{esc(p.budget)}' + (f"; differs from the main table of this protocol, data set and budget in "
                                      f"{esc(', '.join(f'{k}={show(v)}' for k, v in p.suffix.items()))}" if p.suffix else "")
                + f"; {len(p.used)} runs used, {len({r for lo in p.left_out for r in lo.runs})} left out.</p>"]
        data: dict[str, Any] = {"name": p.name, "protocol": p.protocol, "dataset": p.dataset, "budget": p.budget, "mode": p.mode,
                                "setting": p.setting, "suffix": p.suffix, "policy": p.policy, "notes": p.notes,
                                "columns": [{"label": c.label, "method": c.method, "runs": c.runs, "params": c.params} for c in p.columns],
                                "left_out": [{"runs": lo.runs, "reason": lo.reason} for lo in p.left_out], "tables": {}}
        dice = report.table(p.name, "dice")
        body.append("<h2>Leaderboard</h2>")
        if kind == "segmentation" and dice is not None:
            published = [e for e in self.published.get(protocol or "", [])] if protocol else []
            board = seg_leaderboard(dice, p, published)
            data["leaderboard"] = board
            body.append(seg_leaderboard_html(board, up, protocol))
        elif kind == "classification" and report.table(p.name, "classification") is not None:
            board = classification_leaderboard(report.table(p.name, "classification"), p)
            data["leaderboard"] = board
            body.append(classification_leaderboard_html(board, up))
        else:
            body.append('<p class="mute">No leaderboard: ' + ("the timing table below ranks nothing." if kind == "timing" else
                                                              "its table could not be made (see the index).") + "</p>")
        if any(lg.pool is p for lg in self.ledgers):
            body.append(f'<p>Published against measured, cell by cell: <a href="{up}ledger.html#{esc(p.name)}">reproduction ledger</a>.</p>')
        for o in [o for o in report.outcomes if o.job.pool == p.name and o.table is not None]:
            t = o.table
            body += [f'<h2 id="t-{esc(o.job.kind)}">{esc(o.job.name[:1].upper() + o.job.name[1:])}</h2>', table_html(t, up)]
            files = " · ".join(f'<a href="{self.table_file(f.name, up)}">{esc(f.name.removeprefix(t.stem) or f.name)}</a>'
                               for f in sorted(o.files))
            if files:
                body.append(f'<p class="note">Files: {files}</p>')
            data["tables"][o.job.kind] = table_data(t)
        figures = [o for o in report.outcomes if o.job.pool == p.name and o.job.figure and o.files]
        if figures:
            body.append("<h2>Figures</h2>")
        for o in figures:
            png = next((f for f in o.files if f.suffix == ".png"), None)
            pdf = next((f for f in o.files if f.suffix == ".pdf"), None)
            img = f'<img src="{self.table_file(png.name, up)}" alt="{esc(o.job.name)}">' if png else ""
            link = f' <a href="{self.table_file(pdf.name, up)}" download>PDF</a>' if pdf else ""
            body.append(f"<figure>{img}<figcaption>{esc(o.job.name)}.{link}</figcaption></figure>")
        not_made = [o for o in report.outcomes if o.job.pool == p.name and (o.error or o.skipped)]
        if not_made:
            body.append('<p class="note">Not made: ' + "; ".join(f"{esc(o.job.name)}: {'failed' if o.error else 'skipped'} "
                                                                  f"({esc(o.error or o.skipped)})" for o in not_made) + "</p>")
        body += ["<h2>Comparability key</h2>",
                 '<p class="note">Runs share this table when their specs agree on everything but the row fields (seed, '
                 'training subset, evaluated subsets, missing rate); a column is one key but those fields (its seeds pool '
                 'into its cells) and never mixes code versions. Fields every column shares:</p>',
                 '<dl class="kv">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(show(v))}</dd>" for k, v in sorted(p.setting.items())) + "</dl>",
                 "<h3>Columns</h3>"]
        rows = []
        for c in p.columns:
            spec = self.store.runs[c.runs[0]].spec
            method = {k: v for k, v in flatten(spec).items() if k.split(".")[0] in ("method", "method_params", "training")
                      or k == "code.method"}
            runs = " ".join(f'<a href="{run_href(r, up)}">{esc(r.split("/")[0])}</a>' for r in c.runs)
            rows.append([esc(c.label), esc(", ".join(f"{k}={show(v)}" for k, v in method.items())), runs,
                         f"<details><summary>key</summary><code>{esc(comparability_key(spec))}</code></details>"])
        body.append(simple_table(["column", "method fields", "runs", "comparability key"], rows, left=4, sortable=False))
        if p.notes:
            body += ["<h3>Notes</h3>", *(f'<p class="note">{esc(n)}</p>' for n in p.notes)]
        body.append("<h2>Runs left out</h2>")
        if p.left_out:
            rows = []
            for lo in p.left_out:
                links = ", ".join(f'<a href="{run_href(r, up)}">{esc(r)}</a>' for r in lo.runs)
                rows.append([links, esc(lo.reason)])
            body.append(simple_table(["runs", "reason"], rows, left=1, sortable=False, wrap=(1,)))
        else:
            body.append("<p>None.</p>")
        self.put(f"pools/{p.name}.html", document(p.name, "\n".join(body), up))
        self.put(f"pools/{p.name}.json", dump(data))

    # --- ledger ----------------------------------------------------------------------------------------

    def ledger_page(self) -> None:
        up = ""
        et = ("post-processed (ETpp)" if self.report.opt.et == "ETpp" else
              "without post-processing (make_tables --et ETpp: post-processed)")
        body = ["<h1>Reproduction ledger</h1>",
                '<p class="caption">Published BraTS2018 Dice (%) against this store\'s runs of the same protocol: A (the U-HVED / '
                'RFNet local split, scored locally) and B (the 66 validation cases on the BraTS portal) score different cases, '
                'so each is compared only with runs of its own protocol and never ranked with the other. Per cell: published '
                'minus measured (positive: the paper reports more than measured here), with the 95% t interval over seeds where '
                'there are at least two; bias: the signed mean of these differences over an entry\'s cells (its 15 subsets x '
                '3 regions where the paper prints them, else its three averages); agreement: Spearman\'s rho and Kendall\'s tau '
                'between the published values (the mean of a method\'s entries) and the measured averages of the same methods. '
                f'Measured ET: {et}; '
                'each entry says how its paper reports ET.</p>']
        data: dict[str, Any] = {"protocols": {}, "ledgers": []}
        for protocol, entries in sorted(self.published.items()):
            mine = [lg for lg in self.ledgers if lg.protocol == protocol]
            body.append(f'<h2 id="protocol-{esc(protocol)}">Protocol {esc(protocol)}</h2>')
            rows = [[esc(e.method), esc(harness_method(e) or "-"), esc(e.citation), *(f"{e.average[r]:.2f}" for r in REGIONS),
                     "per subset" if e.dice else "averages"] for e in entries]
            values = [["", "", "", *(num(e.average[r]) for r in REGIONS), ""] for e in entries]
            body += ["<h3>Published entries</h3>",
                     simple_table(["method", "here", "source", *(f"{r} Avg" for r in REGIONS), "printed"], rows, left=2, values=values,
                                  wrap=(2,))]
            data["protocols"][protocol] = [{"id": e.id, "method": e.method, "harness": harness_method(e), "citation": e.citation,
                                            "average": e.average, "per_subset": bool(e.dice)} for e in entries]
            if not mine:
                body.append(f"<p>No runs of protocol {esc(protocol)} here share a method with these entries.</p>")
            for lg in mine:
                body.append(self.ledger_section(lg))
                data["ledgers"].append({"pool": lg.pool.name, "protocol": lg.protocol, "cells": lg.cells.to_dict("records"),
                                        "bias": lg.bias.to_dict("records"), "methods": lg.methods.to_dict("records"),
                                        "agreement": lg.agreement.to_dict("records"), "unmatched": lg.unmatched})
        self.put("ledger.html", document("Reproduction ledger", "\n".join(body), up))
        self.put("ledger.json", dump(data))

    def ledger_section(self, lg: Ledger) -> str:
        up = ""
        p = lg.pool
        runs = {c.label: c.runs for c in p.columns}
        out = [f'<h3 id="{esc(p.name)}">Runs of <a href="{pool_href(p.name, up)}">{esc(p.name)}</a></h3>']
        rows = [[esc(b.entry), esc(b.method), linked(b.column, runs.get(b.column, ()), up), str(b.cells), fnum(b.bias, sign=True),
                 fnum(b.abs_bias), esc(b.citation)] for b in lg.bias.itertuples()]
        values = [["", "", "", num(b.cells), num(b.bias), num(b.abs_bias), ""] for b in lg.bias.itertuples()]
        out += ["<p><b>Bias per published entry</b> (published − measured, Dice points)</p>",
                simple_table(["entry", "method", "measured column", "cells", "signed mean bias", "mean |bias|", "source"], rows, left=3,
                             values=values, wrap=(6,))]
        rows = [[esc(m.method), str(m.entries), fnum(m.bias, sign=True), fnum(m.abs_bias)] for m in lg.methods.itertuples()]
        values = [["", num(m.entries), num(m.bias), num(m.abs_bias)] for m in lg.methods.itertuples()]
        out += ["<p><b>Bias per method</b> (mean over its entries)</p>",
                simple_table(["method", "entries", "signed mean bias", "mean |bias|"], rows, values=values)]
        rows = [[esc(a.region), str(int(a.n)), fnum(a.spearman), fnum(a.spearman_p, 3), fnum(a.kendall), fnum(a.kendall_p, 3),
                 esc(a.methods)] for a in lg.agreement.itertuples()]
        out += ["<p><b>Ranking agreement</b> (published vs measured, over the methods in both; n &lt; 2: none)</p>",
                simple_table(["region", "methods", "Spearman rho", "p", "Kendall tau", "p", "which"], rows, sortable=False)]
        if lg.unmatched:
            out.append(f'<p class="note">Published entries of protocol {esc(lg.protocol)} with no column here: '
                       f'{esc(", ".join(lg.unmatched))}.</p>')
        cells = lg.cells
        for (entry, column), g in cells.groupby(["entry", "column"], sort=True):
            subsets = list(dict.fromkeys(g.subset))
            head = ["subset", *(f"{r} {k}" for r in REGIONS for k in ("published", "measured", "diff [95% CI]"))]
            rows, values = [], []
            for s in subsets:
                row, vals = [esc(s)], [""]
                for r in REGIONS:
                    x = g[(g.subset == s) & (g.region == r)]
                    if x.empty:
                        row += ["-"] * 3
                        vals += [""] * 3
                        continue
                    x = x.iloc[0]
                    ci = f" [{fnum(x.ci_low, sign=True)}, {fnum(x.ci_high, sign=True)}]" if math.isfinite(x.ci_low) else \
                        f" (n={int(x.seeds)} seed{'s' if x.seeds != 1 else ''})"
                    row += [fnum(x.published), linked(fnum(x.measured), runs.get(column, ()), up), fnum(x["diff"], sign=True) + ci]
                    vals += [num(x.published), num(x.measured), num(x["diff"])]
                rows.append(row)
                values.append(vals)
            out += [f"<p><b>{esc(entry)}</b> against <b>{esc(column)}</b></p>", simple_table(head, rows, values=values)]
        return "\n".join(out)

    # --- runs ------------------------------------------------------------------------------------------

    def scores(self) -> dict[str, list[tuple]]:
        """Per run: (metric, eval_subset, region or condition, mean, n) of its rows, subsets in the canonical order (by
        size, then by modality index), from one pass over the store's rows."""
        rows = self.store.rows
        if rows.empty:
            return {}
        d = rows[["run_id", "metric", "eval_subset", "value"]].copy()
        code = rows["eval_code"].fillna(0).astype(int) if "eval_code" in rows else pd.Series(0, index=rows.index)
        d["order"] = [(bin(c).count("1"), tuple(i for i in range(c.bit_length()) if c >> i & 1)) for c in code]
        where = rows["region"] if "region" in rows else pd.Series("", index=rows.index)
        if "condition" in rows:
            where = where.where(where.notna(), rows["condition"])
        d["where"] = where.fillna("").astype(str)
        g = d.groupby(["run_id", "metric", "order", "eval_subset", "where"], sort=True).value.agg(["mean", "count"])
        out: dict[str, list[tuple]] = defaultdict(list)
        for (run, metric, _, subset, where_), (mean, count) in zip(g.index, g.to_numpy()):
            out[run].append((metric, subset, where_, float(mean), int(count)))
        return out

    def scores_html(self, run: Run, scores: list[tuple]) -> str:
        if not scores:
            return "<p class=\"mute\">No rows: the run has no result.</p>"
        metrics = {m for m, *_ in scores}
        table = {(m, s, w): (v, n) for m, s, w, v, n in scores}
        if "dice" in metrics:
            labels = list(dict.fromkeys(s for m, s, *_ in scores if m == "dice"))
            regions = [r for r in ("ET", "ETpp", "TC", "WT") if any(("dice", s, r) in table for s in labels)]
            hd95 = [r for r in regions if any(("hd95", s, r) in table for s in labels)]
            head = ["subset", *(f"Dice {r} (%)" for r in regions), *(f"HD95 {r} (mm)" for r in hd95)]
            rows, values = [], []
            for s in labels:
                row, vals = [esc(s)], [""]
                for m, scale, which in (("dice", 100.0, regions), ("hd95", 1.0, hd95)):
                    for r in which:
                        v = table.get((m, s, r), (math.nan, 0))[0] * scale
                        row.append(fnum(v))
                        vals.append(num(v))
                rows.append(row)
                values.append(vals)
            n = max(n for (m, *_), (_, n) in table.items() if m == "dice")
            return (simple_table(head, rows, values=values)
                    + f'<p class="note">Mean over the {n} test cases per subset; the tables average these over seeds.</p>')
        if "correct" in metrics:
            rows = [[esc(s), esc(w), fnum(100 * v), str(n)] for m, s, w, v, n in scores if m == "correct"]
            return simple_table(["subset", "condition", "accuracy (%)", "test samples"], rows, left=2)
        rows = [[esc(m), esc(w), esc(s), f"{v:.6g}", str(n)] for m, s, w, v, n in scores]
        return simple_table(["metric", "phase", "subset", "mean", "values"], rows, left=3)

    def run_page(self, run: Run, scores: list[tuple]) -> None:
        up = "../"
        model_dir = None
        if run.folder is not None:
            model_dir = run.folder if (run.folder / MODEL).exists() or (run.folder / LEGACY_SPEC).exists() else run.folder.parent
        curve = training_curve(model_dir / LOG) if model_dir is not None else []
        params = self.store.resolved_params(run.run_id) if run.spec or run.meta else {}
        body = [f"<h1>{esc(run.run_id)}</h1>",
                f'<p>State: <b class="state-{esc(run.state)}">{esc(run.state)}</b>' + (f": {esc(run.detail)}" if run.detail else "") + "</p>"]
        if run.spec:
            s = run.spec
            body.append(f'<p class="caption">{esc(s.get("method"))} on {esc(s.get("dataset"))}, protocol {esc(s.get("protocol"))}, '
                        f'budget {esc(s.get("budget_name"))}, seed {esc(s.get("seed"))}, training subset '
                        f'{esc(s.get("train_subset") or "random")}.</p>')
        places = [f'<li>used in <a href="{pool_href(p, up)}">{esc(p)}</a>, column {esc(c)}</li>' for p, c in sorted(self.used_in.get(run.run_id, []))]
        places += [f'<li>left out of <a href="{pool_href(p, up)}">{esc(p)}</a>: {esc(why)}</li>'
                   for p, why in sorted(self.left_in.get(run.run_id, []))]
        body += ["<h2>Tables</h2>", "<ul>" + "".join(places) + "</ul>" if places else "<p>In no table.</p>"]
        siblings = [r for r in self.siblings.get(run.run_id, ()) if r != run.run_id]
        if siblings:
            body.append("<p>The other runs of its column: " + ", ".join(f'<a href="{run_href(r, up)}">{esc(r)}</a>' for r in siblings) + "</p>")
        body += ["<h2>Scores</h2>", self.scores_html(run, scores), "<h2>Training curve</h2>"]
        if curve:
            body.append(curve_svg(curve))
            rows = [[str(p["iteration"]), f'{p["lr"]:.4g}', *(f'{p["losses"].get(k, math.nan):.4g}' for k in
                                                              sorted({k for q in curve for k in q["losses"]}, key=lambda k: (k != "total", k)))]
                    for p in curve]
            terms = sorted({k for q in curve for k in q["losses"]}, key=lambda k: (k != "total", k))
            body.append(f"<details><summary>the {len(curve)} logged iterations</summary>"
                        + simple_table(["iteration", "lr", *terms], [[esc(c) for c in r] for r in rows], sortable=False) + "</details>")
            body.append(f'<p class="note">Loss terms as the trainer logged them (every log_every iterations) in '
                        f'{esc(LOG)} of the model.</p>')
        else:
            body.append(f'<p class="mute">No training iterations in the model\'s {esc(LOG)}.</p>')
        body += ["<h2>Spec</h2>", f"<pre>{esc(json.dumps(plain(run.spec), sort_keys=True, indent=1))}</pre>",
                 "<h2>Resolved parameters</h2>",
                 ('<dl class="kv">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(show(v) if not isinstance(v, (dict, list)) else json.dumps(v))}</dd>"
                                              for k, v in sorted(params.items())) + "</dl>") if params else "<p>None recorded.</p>",
                 "<h2>Provenance</h2>", f"<pre>{esc(json.dumps(plain(run.meta), sort_keys=True, indent=1))}</pre>" if run.meta
                 else "<p class=\"mute\">No meta.json: the run did not finish.</p>"]
        links = []
        if run.folder is not None:
            for folder, names in ((model_dir, MODEL_FILES), (run.folder if run.folder != model_dir else None, SCORE_FILES)):
                if folder is None:
                    continue
                try:
                    present = {e.name for e in os.scandir(folder)}
                except OSError:
                    present = set()
                base = Path(os.path.relpath(os.path.abspath(folder), self.runs_dir)).as_posix()
                links += [f'<li><a href="{quote(f"{base}/{name}")}">{esc(folder.name)}/{esc(name)}</a></li>'
                          for name in names if name in present]
        body += ["<h2>Files</h2>", '<p class="note">In the store, linked relatively: they open where the store sits beside the '
                 'site. The spec, parameters, provenance and curve above are in this page\'s JSON '
                 f'(<a href="{quote(page_name(run.run_id))}.json">{esc(page_name(run.run_id))}.json</a>).</p>',
                 "<ul>" + "".join(links) + "</ul>" if links else "<p>None.</p>"]
        self.put(f"runs/{page_name(run.run_id)}.html", document(run.run_id, "\n".join(body), up))
        self.put(f"runs/{page_name(run.run_id)}.json", dump({
            "run_id": run.run_id, "state": run.state, "detail": run.detail, "spec": run.spec, "params": params, "meta": run.meta,
            "curve": curve, "scores": [{"metric": m, "eval_subset": s, "where": w, "mean": v, "n": n} for m, s, w, v, n in scores],
            "used_in": self.used_in.get(run.run_id, []), "left_out_of": self.left_in.get(run.run_id, [])}))

    # --- all -----------------------------------------------------------------------------------------

    def attempt(self, name: str, rel: str, title: str, make: Any) -> None:
        """``make()``; a failure is one line in ``errors`` and a page at ``rel`` that says so (links to it still resolve)."""
        try:
            make()
        except Exception as e:  # noqa: BLE001 - one page never stops the site
            line = f"{name}: failed ({type(e).__name__}: {' '.join(str(e).split())})"
            self.errors.append(line)
            self.put(rel, document(title, f"<h1>{esc(title)}</h1>\n<p>This page could not be made: {esc(line)}</p>",
                                   "../" if "/" in rel else ""))

    def write(self) -> list[Path]:
        """Every page, its data and the assets; files of an earlier build that this one did not write are removed from
        the site's own folders (pools/, runs/, assets/). A page that fails is one line in ``errors`` (and a page saying
        so); the others are written. Returns the files written."""
        self.put("assets/style.css", CSS)
        self.put("assets/sort.js", JS)
        for p in self.pools:
            self.attempt(f"site page of {p.name}", f"pools/{p.name}.html", p.name, lambda p=p: self.pool_page(p))
        self.attempt("site ledger", "ledger.html", "Reproduction ledger", self.ledger_page)
        scores = self.scores()
        for run in self.store.runs.values():
            self.attempt(f"site page of run {run.run_id}", f"runs/{page_name(run.run_id)}.html", run.run_id,
                         lambda run=run: self.run_page(run, scores.get(run.run_id, [])))
        self.index()
        for path, text in sorted(self.files.items()):
            path.parent.mkdir(parents=True, exist_ok=True)
            data = text.encode("utf-8")
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
        for folder in ("pools", "runs", "assets"):
            for f in sorted((self.root / folder).glob("*")):
                if f.is_file() and f not in self.files:
                    f.unlink()
        return sorted(self.files)


def write_site(report: Report, root: Path, tables: Path) -> Site:
    """The site of ``report`` (already written into ``tables``) in ``root``; see the module's docstring. Returns it: its
    ``written`` files and its ``errors`` (a line per page that could not be made)."""
    site = Site(report, root, tables)
    site.written = site.write()
    return site
