r"""Every LaTeX table make_tables writes compiles in a two-column paper and reads in print: no overfull line wider
than a few points, no float taller than a page, no table scaled below 75% of its natural size, no caption longer
than three lines, every special character escaped (pdflatex; skipped without it). The scale and the caption lines
are measured by TeX itself: the test's preamble wraps \resizebox and \caption to write them to the log."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.make_tables import main as make_tables  # noqa: E402
from missbench.report.render import LAYOUTS, TEX_PACKAGES, tex  # noqa: E402
from report_store import fake_classification_run, fake_run, fake_timing_run  # noqa: E402

PDFLATEX = shutil.which("pdflatex")
pytestmark = pytest.mark.skipif(PDFLATEX is None, reason="pdflatex is not installed (Debian: apt-get install "
                                "texlive-latex-base texlive-latex-recommended texlive-fonts-recommended)")
#: Overfull boxes up to this width (pt) are tolerated; anything wider sticks out of the column.
TOLERANCE_PT = 2.0
#: The smallest scale a table may be printed at, and the most lines a caption may take.
MIN_SCALE, CAPTION_LINES = 0.75, 3
#: Preamble hooks that log each table's natural width beside the line width it is fitted to, and each caption's lines
#: (typeset as article's \@makecaption does, at the float's width and font, into a box that is thrown away).
MEASURE = r"""\newsavebox\mbbox \newsavebox\mbcap
\let\mbresizebox\resizebox
\renewcommand\resizebox[3]{\sbox\mbbox{#3}\typeout{MBSCALE \the\wd\mbbox\space\the\linewidth}\mbresizebox{#1}{#2}{\usebox\mbbox}}
\let\mbcaption\caption
\renewcommand\caption[1]{\setbox\mbcap\vbox{\hsize\linewidth\noindent Table 99: #1\par\xdef\mblines{\the\prevgraf}}%
  \typeout{MBCAPTION \mblines}\mbcaption{#1}}
"""
#: Every character a label or note may hold that LaTeX treats specially.
SPECIAL = "a_b %c &d #e <f >g ~h ^i $j {k} l\\m |n [o] ± † × ● ○ α β ≥ — –"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Every kind of table, with long labels and left-out runs: four methods, a training override, a failed
    seed, a stopped run, another data set size, a grid, dedicated runs, timing at two budgets, classification
    by rate, and BraTS2018 protocol A runs beside published numbers."""
    root = tmp_path_factory.mktemp("store")
    for seed in (0, 1):
        for m, skill in (("shaspec", 0.7), ("zero_fill", 0.3), ("mean_fill", 0.35), ("hemis", 0.5)):
            fake_run(root / "nd", m, seed, skill=skill, n_cases=4)
            for subset in ("T1", "FLAIR+T1+T1c+T2"):
                fake_run(root / "ded", m, seed, skill=skill, protocol="dedicated", mode="dedicated", train_subset=subset, n_cases=4)
        fake_run(root / "nd", "zero_fill", seed, skill=0.4, n_cases=4, training={"schedule": "poly", "dropout": "uniform_subset"})
    fake_run(root / "nd", "shaspec", 2, state="failed", n_cases=4, failure="FloatingPointError: shaspec: loss is nan at "
             "iteration 0 ({'dice': 0.96, 'bce': 2.41, 'dao': nan, 'dco': 0.028})")
    fake_run(root / "nd", "hemis", 2, state="stopped", n_cases=4)
    fake_run(root / "nd", "zero_fill", 0, n_cases=3)
    for params in ({"alpha": 0}, {"alpha": 0.01}, {}, {"alpha": 1}, {"beta": 0}, {"beta": 0.002}, {"beta": 0.2}, {"beta": 1}):
        fake_run(root / "ab", "shaspec", 0, protocol="alpha_beta", params=params, n_cases=3)
    for params in ({}, {"dao": "kl"}, {"dao": "mse"}, {"dao": "ce"}):
        fake_run(root / "dao", "shaspec", 0, protocol="dao_loss", params=params, n_cases=3)
    for m in ("shaspec", "zero_fill", "mean_fill"):
        fake_timing_run(root / "timing", m, 1, 16, "smoke", 0.02)
        fake_timing_run(root / "timing", m, 2, 32, "default", 0.05, memory_kind="peak_cuda_allocated_mib")
        for rate in (0.05, 0.1, 0.15, 0.2):
            fake_classification_run(root / "audio", m, 0, rate, "modality_rate", 0.8)
            fake_classification_run(root / "slots", m, 0, rate, "slots", 0.8)
    for m, skill in (("shaspec", 0.6), ("rfnet", 0.5), ("mmformer", 0.55)):
        fake_run(root / "a", m, 0, skill=skill, protocol="brats2018_a", dataset="brats2018", n_cases=4,
                 dataset_params={"split": "/data/U-HVED/splits/dataset_split_3.csv", "root": "/data/BraTS2018"})
    return root


def compile_all(folder: Path, extra: str = "") -> str:
    """pdflatex on a two-column article that inputs every .tex in ``folder`` (a page break after each, so
    floats never pile up), with the MEASURE hooks; returns the log. Fails on any TeX error."""
    body = "".join(f"\\typeout{{MBFILE {p.name}}}\\input{{{p.name}}}\n\\clearpage\n" for p in sorted(folder.glob("*.tex")))
    (folder / "paper.tex_").write_text(f"\\documentclass[twocolumn]{{article}}\n\\usepackage{{{','.join(TEX_PACKAGES)}}}\n{MEASURE}"
                                       f"\\begin{{document}}\n{extra}\n{body}\\end{{document}}\n")
    proc = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "-jobname=paper", "paper.tex_"], cwd=folder,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "max_print_line": "100000"})
    log = (folder / "paper.log").read_text(errors="replace")
    errors = [line for line in log.splitlines() if line.startswith("!")]
    assert proc.returncode == 0 and not errors, errors or proc.stdout[-2000:]
    return log


def measured(log: str) -> tuple[list[tuple[str, float]], list[tuple[str, int]]]:
    """(file, scale) of every table and (file, lines) of every caption, from the log of `compile_all` (whose lines TeX
    does not wrap: max_print_line)."""
    scales, captions, current = [], [], "?"
    for m in re.finditer(r"^MBFILE (\S+)|^MBSCALE ([\d.]+)pt ([\d.]+)pt|^MBCAPTION (\d+)", log, re.M):
        if m.group(1):
            current = m.group(1)
        elif m.group(2):
            scales.append((current, min(1.0, float(m.group(3)) / float(m.group(2)))))
        else:
            captions.append((current, int(m.group(4))))
    return scales, captions


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_table_compiles_and_fits_a_two_column_page(store, tmp_path, layout):
    out = tmp_path / layout
    assert make_tables([str(store), "--out", str(out), "--no-figures", "--latex", layout, "--published", "A"]) == 0
    files = sorted(out.glob("*.tex"))
    assert len(files) >= 20 and (out / "published_A.tex").exists() and (out / "gap_dedicated_brats_synthetic_smoke.tex").exists()
    for f in files:
        text = f.read_text()
        assert text.isascii(), f"{f.name}: a character LaTeX's default encoding cannot print"
        if layout == "page":
            assert "\\begin{table*}" in text and "\\begin{table}" not in text
    extra = f"Escaped: {tex(SPECIAL)}\\par" if layout == "auto" else ""
    log = compile_all(out, extra)
    overfull = [float(w) for w in re.findall(r"Overfull \\hbox \((\d+(?:\.\d+)?)pt too wide\)", log)]
    assert not [w for w in overfull if w > TOLERANCE_PT], f"{layout}: overfull lines of {overfull} pt"
    assert "Float too large" not in log, re.findall(r"Float too large.*", log)
    scales, captions = measured(log)
    assert len(scales) >= len(files) and len(captions) == len(scales)  # every float measured
    small = [(f, round(x, 3)) for f, x in scales if x < MIN_SCALE]
    assert not small, f"{layout}: tables printed below {MIN_SCALE:.0%}: {small}"
    long = [(f, n) for f, n in captions if n > CAPTION_LINES]
    assert not long, f"{layout}: captions longer than {CAPTION_LINES} lines: {long}"
    dice = (out / "dice_non_dedicated_brats_synthetic_smoke.tex").read_text()
    assert "hemis_random_seed0" not in dice.split("\n", 1)[1]  # run ids only in the comment line and the runs files
    assert "Runs: 10 used (ids in dice_non_dedicated_brats_synthetic_smoke.runs.txt)" in dice.replace("\\_\\allowbreak{}", "_")
    assert (out / "dice_non_dedicated_brats_synthetic_smoke.left_out.txt").read_text().count("\n") == 3
    if layout == "split":  # a float per region block, its caption naming the block
        assert dice.count("\\caption{") >= 3 and "(ET; part 1 of" in dice and "\\cmidrule" not in dice
    if layout == "page":
        assert dice.count("\\begin{table*}") >= 3  # five methods are too wide for one page at 75%: a panel per block


def test_special_characters_are_escaped():
    assert tex("a_b") == r"a\_\allowbreak{}b" and tex("<") == "$<$" and tex("50%") == r"50\%" and tex("[x]") == "{[}x{]}"
    assert tex(SPECIAL).isascii()
