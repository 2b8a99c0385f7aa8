"""The results site (analysis/make_tables.py --site; missbench/report/site.py) on a fabricated store: every link
resolves inside the folder or the store (nothing leaves file://), the index counts every protocol, data set and
budget, the leaderboards are the Dice tables' averages with their runs one click away, published rows stand only
beside runs of their own BraTS2018 protocol, the reproduction ledger's numbers are published minus measured, a
run page holds its curve from log.txt, and a rebuild is byte-identical. The last test drives a real browser
(headless Chromium through Playwright) and is skipped, with the reason, where none is installed."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.make_tables import main as make_tables  # noqa: E402
from report_store import fake_classification_run, fake_run, fake_timing_run  # noqa: E402
from missbench.report.published import select  # noqa: E402

ND = "non_dedicated_brats_synthetic_smoke"
A = "brats2018_a_brats2018_smoke"
SPLIT = {"split": "/data/U-HVED/splits/dataset_split_3.csv"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Three methods x two seeds on 12 cases (CIs printed), a failed and a stopped run, four BraTS2018 protocol A methods
    (two seeds), a one-case alpha/beta grid, a timing run and a classification sweep."""
    root = tmp_path_factory.mktemp("store")
    for seed in (0, 1):
        for m, skill in (("shaspec", 0.7), ("zero_fill", 0.4), ("mean_fill", 0.5)):
            fake_run(root / "nd", m, seed, skill=skill, n_cases=12)
        for m, skill in (("mmformer", 0.62), ("rfnet", 0.58), ("hemis", 0.45), ("shaspec", 0.6)):
            fake_run(root / "a", m, seed, skill=skill, protocol="brats2018_a", dataset="brats2018", dataset_params=SPLIT, n_cases=4)
    fake_run(root / "nd", "shaspec", 2, state="failed", n_cases=12, failure="FloatingPointError: loss is nan at iteration 2")
    fake_run(root / "nd", "zero_fill", 3, state="stopped", n_cases=12)
    for params in ({"alpha": 0}, {}, {"alpha": 1}):
        fake_run(root / "ab", "shaspec", 0, protocol="alpha_beta", params=params, n_cases=1)
    fake_timing_run(root / "timing", "zero_fill", 1, 16, "smoke", 0.02)
    for rate in (0.1, 0.2):
        fake_classification_run(root / "audio", "smil", 0, rate, "modality_rate", 0.8)
    return root


@pytest.fixture(scope="module")
def site(store, tmp_path_factory) -> Path:
    """The site without figures (seconds; `test_figures_are_shown_with_their_pdf` draws them)."""
    out = tmp_path_factory.mktemp("site") / "site"
    assert make_tables([str(store), "--site", str(out), "--no-figures"]) == 0
    return out


class Links(HTMLParser):
    """Every href and src of a page, and its element ids."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [a[k] for k in ("href", "src") if a.get(k)]
        if a.get("id"):
            self.ids.add(a["id"])


def page_links(path: Path) -> Links:
    parser = Links()
    parser.feed(path.read_text())
    return parser


def pool_data(site: Path, pool: str) -> dict:
    return json.loads((site / "pools" / f"{pool}.json").read_text())


def test_every_link_stays_on_disk_and_resolves(site, store):
    pages = sorted(site.rglob("*.html"))
    assert (site / "index.html").exists() and len(list((site / "runs").glob("*.html"))) == 22  # every score, failed ones too
    for page in pages:
        text = page.read_text()
        assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text, page
        for link in page_links(page).links:
            url = urlparse(link)
            if url.scheme == "data":
                continue
            assert not url.scheme and not url.netloc, f"{page.name}: {link} leaves the folder"
            target = (page.parent / unquote(url.path)).resolve() if url.path else page
            assert target.exists(), f"{page.relative_to(site)}: {link} does not resolve"
    assert (site / "assets" / "sort.js").exists() and (site / "assets" / "style.css").exists()


def test_index_counts_runs_used_and_left_out_per_protocol_data_set_and_budget(site):
    index = json.loads((site / "site.json").read_text())
    nd = index["counts"]["protocol"]["non_dedicated"]
    assert (nd["runs"], nd["used"], nd["left_out"]) == (8, 6, 2) and nd["states"] == {"done": 6, "failed": 1, "stopped": 1}
    assert set(index["counts"]["protocol"]) == {"alpha_beta", "audio_rate", "brats2018_a", "non_dedicated", "timing"}
    assert set(index["counts"]["dataset"]) == {"avmnist_synthetic", "brats2018", "brats_synthetic"}
    assert index["counts"]["budget"]["smoke"]["runs"] == 22
    html = (site / "index.html").read_text()
    for pool in index["pools"]:
        assert f'href="pools/{pool["name"]}.html"' in html
    assert 'href="tables/dice_non_dedicated_brats_synthetic_smoke.tex"' in html  # the files the tables always were
    assert index["not_made"] == [] or all(not x["error"] for x in index["not_made"])


def test_leaderboard_is_the_dice_tables_average_with_cis_and_links_to_runs(site):
    data = pool_data(site, ND)
    board = data["leaderboard"]
    table = pd.read_csv(site / "tables" / f"dice_{ND}.csv", header=[0, 1], index_col=0)
    assert [e["label"] for e in board] == ["shaspec", "mean_fill", "zero_fill"] and [e["rank"] for e in board] == [1, 2, 3]
    for e in board:
        for region in ("ET", "TC", "WT"):
            assert e["regions"][region]["value"] == pytest.approx(table.loc["Avg", (region, e["label"])], abs=1e-4)
            assert re.fullmatch(r"\[\d+\.\d\d, \d+\.\d\d\]", e["regions"][region]["ci"])  # 12 cases: printed
        assert e["mean"] == pytest.approx(np.mean([e["regions"][r]["value"] for r in ("ET", "TC", "WT")]))
        assert len(e["runs"]) == 2 and all((site / "runs" / f"{r.replace('/', '--')}.html").exists() for r in e["runs"])
    cells = data["tables"]["dice"]["rows"][0]["cells"]  # FLAIR: each number links to the runs it pools
    assert all(len(c["runs"]) == 2 for c in cells)
    left = {tuple(x["runs"]): x["reason"] for x in data["left_out"]}
    assert any("failed: FloatingPointError: loss is nan" in r for r in left.values())
    page = (site / "pools" / f"{ND}.html").read_text()
    assert "Comparability key" in page and "Runs left out" in page and "shaspec[" not in page


def test_figures_are_shown_with_their_pdf(tmp_path):
    for m, skill in (("shaspec", 0.7), ("zero_fill", 0.4), ("mean_fill", 0.5)):
        fake_run(tmp_path / "s", m, 0, skill=skill, n_cases=3)
    fake_timing_run(tmp_path / "s", "zero_fill", 1, 16, "smoke", 0.02)
    assert make_tables([str(tmp_path / "s"), "--site", str(tmp_path / "site")]) == 0
    page = (tmp_path / "site" / "pools" / f"{ND}.html").read_text()
    for kind in ("heatmap", "cases", "ranks"):
        assert f'<img src="../tables/fig_{kind}_{ND}.png"' in page and f'href="../tables/fig_{kind}_{ND}.pdf" download' in page
    timing = (tmp_path / "site" / "pools" / "timing_brats_synthetic_smoke.html").read_text()
    assert 'src="../tables/fig_timing_timing_brats_synthetic_smoke.png"' in timing


def test_published_rows_stand_only_beside_runs_of_their_protocol(site):
    board = pool_data(site, A)["leaderboard"]
    published = [e for e in board if e["kind"] == "published"]
    assert published and {e["protocol"] for e in published} == {"A"}
    assert {e["label"] for e in published} >= {"mmFormer (published)", "RFNet (published)"}
    assert "ShaSpec (published)" not in {e["label"] for e in published}  # protocol B
    assert all("rank" not in e for e in published) and sorted(e["rank"] for e in board if e["kind"] == "measured") == [1, 2, 3, 4]
    assert not [e for e in pool_data(site, ND)["leaderboard"] if e["kind"] == "published"]


def test_ledger_is_published_minus_measured_with_seed_cis_bias_and_rank_agreement(site, store):
    ledger = json.loads((site / "ledger.json").read_text())
    (lg,) = ledger["ledgers"]
    assert lg["pool"] == A and lg["protocol"] == "A"
    cells = pd.DataFrame(lg["cells"])
    # U-HeMIS as ShaSpec's Table 1 prints it (protocol A, per subset) against this store's hemis runs
    published_t1 = next(e for e in select("A") if e.id == "uhemis_shaspec_t1").dice["ET"]["T1"]
    cell = cells[(cells.entry == "uhemis_shaspec_t1") & (cells.subset == "T1") & (cells.region == "ET")].iloc[0]
    rows = pd.concat(pd.read_parquet(p) for p in sorted((store / "a").rglob("rows.parquet")))
    sel = rows[(rows.method == "hemis") & (rows.metric == "dice") & (rows.eval_subset == "T1") & (rows.region == "ET")]
    seeds = sel.groupby("seed").value.mean().to_numpy() * 100
    half = stats.t.ppf(0.975, 1) * seeds.std(ddof=1) / math.sqrt(2)
    assert cell.published == published_t1 and cell.measured == pytest.approx(seeds.mean())
    assert cell["diff"] == pytest.approx(published_t1 - seeds.mean())
    assert (cell.ci_low, cell.ci_high) == (pytest.approx(published_t1 - seeds.mean() - half),
                                           pytest.approx(published_t1 - seeds.mean() + half))
    bias = pd.DataFrame(lg["bias"]).set_index("entry")
    mine = cells[(cells.entry == "uhemis_shaspec_t1") & (cells.subset != "Avg")]
    assert bias.loc["uhemis_shaspec_t1", "bias"] == pytest.approx(mine["diff"].mean()) and len(mine) == 45
    assert bias.loc["rfnet_readme", "cells"] == 3  # no per-subset numbers: its three averages
    agreement = pd.DataFrame(lg["agreement"]).set_index("region")
    published = {"hemis": [e for e in select("A") if e.method in ("U-HeMIS", "HeMIS")],
                 "mmformer": [e for e in select("A") if e.method == "mmFormer"], "rfnet": [e for e in select("A") if e.method == "RFNet"]}
    pub = {m: np.mean([e.average["WT"] for e in es]) for m, es in published.items()}
    measured = {m: next(e for e in pool_data(site, A)["leaderboard"] if e["label"] == m)["regions"]["WT"]["value"] for m in pub}
    rho = stats.spearmanr([pub[m] for m in sorted(pub)], [measured[m] for m in sorted(pub)]).statistic
    assert agreement.loc["WT", "n"] == 3 and agreement.loc["WT", "spearman"] == pytest.approx(rho)
    assert {p for p in ledger["protocols"]} == {"A", "B", "M"}  # B and M listed, never compared with A runs
    assert "No runs of protocol B" in (site / "ledger.html").read_text() and "No runs of protocol M" in (site / "ledger.html").read_text()


def test_a_run_page_holds_spec_provenance_curve_scores_and_files(site, store):
    data = pool_data(site, ND)
    run_id = data["columns"][1]["runs"][0]  # shaspec seed 0
    run = json.loads((site / "runs" / f"{run_id.replace('/', '--')}.json").read_text())
    assert run["state"] == "done" and run["spec"]["method"] == "shaspec" and run["params"]["dao"] == "l1"
    assert [p["iteration"] for p in run["curve"]] == [2, 4] and set(run["curve"][0]["losses"]) == {"dice", "bce", "total"}
    log = (store / "nd" / run_id.split("/")[0] / "log.txt").read_text()
    assert "iteration 4 lr" in log and str(run["curve"][1]["losses"]["total"]) in log
    html = (site / "runs" / f"{run_id.replace('/', '--')}.html").read_text()
    assert "<svg" in html and "polyline" in html and "Provenance" in html and "rows.parquet" in html and "log.txt" in html
    assert any(s["metric"] == "dice" and s["eval_subset"] == "FLAIR" and s["where"] == "WT" for s in run["scores"])
    failed = next(x for x in data["left_out"] if "failed" in x["reason"])["runs"][0]
    page = (site / "runs" / f"{failed.replace('/', '--')}.html").read_text()
    assert "failed" in page and "FloatingPointError: loss is nan at iteration 2" in page and "FAILED" in page


def test_rebuild_is_byte_identical(store, site, tmp_path):
    again = tmp_path / "site"
    assert make_tables([str(store), "--site", str(again), "--no-figures"]) == 0
    mine = sorted(p.relative_to(site) for p in site.rglob("*") if p.is_file())
    assert mine == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in mine:
        assert (site / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_a_store_of_failed_runs_gets_a_site_that_lists_them(tmp_path, capsys):
    for seed in (0, 1):
        fake_run(tmp_path / "s", "shaspec", seed, state="failed", n_cases=2, failure="RuntimeError: out of memory")
    assert make_tables([str(tmp_path / "s"), "--site", str(tmp_path / "site")]) == 1
    assert "no finished runs" in capsys.readouterr().err
    index = (tmp_path / "site" / "index.html").read_text()
    assert index.count("RuntimeError: out of memory") == 2 and len(list((tmp_path / "site" / "runs").glob("*.html"))) == 2


def test_a_page_that_fails_is_one_line_and_the_rest_of_the_site_is_written(store, tmp_path, capsys, monkeypatch):
    from missbench.report import site as site_module

    real = site_module.Site.run_page

    def run_page(self, run, scores):
        if run.spec.get("method") == "hemis":
            raise KeyError("no such column")
        return real(self, run, scores)

    monkeypatch.setattr(site_module.Site, "run_page", run_page)
    assert make_tables([str(store), "--site", str(tmp_path / "site"), "--no-figures"]) == 2  # hemis: two seeds
    lines = [line for line in capsys.readouterr().out.splitlines() if ": failed (" in line]
    assert len(lines) == 2 and all(line.startswith("site page of run hemis_random_seed") and
                                   line.endswith("failed (KeyError: 'no such column')") for line in lines)
    broken = sorted((tmp_path / "site" / "runs").glob("hemis_*.html"))
    assert len(broken) == 2 and "This page could not be made" in broken[0].read_text()
    assert len(list((tmp_path / "site" / "runs").glob("*.html"))) == 22 and "KeyError" in (tmp_path / "site" / "index.html").read_text()


# --- a real browser -----------------------------------------------------------------------------------------------

def chromium() -> tuple[str | None, str]:
    """(Chromium's executable, "") or (None, why there is none)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return None, "playwright is not installed (pip install -e '.[browser]'; no `playwright install` needed)"
    found = os.environ.get("MISSBENCH_CHROMIUM") or next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    return (found, "") if found else (None, "no Chromium on PATH (Debian: apt-get install chromium; or set MISSBENCH_CHROMIUM)")


CHROMIUM, NO_BROWSER = chromium()
#: Flags for a browser on a closed network: nothing in the background reaches out.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
SCREENSHOT = ROOT / "docs" / "figures" / "site.png"


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason=NO_BROWSER)
def test_a_browser_follows_a_leaderboard_cell_to_its_run_and_sorts_a_table_with_no_errors_or_network(site, tmp_path):
    from playwright.sync_api import sync_playwright

    errors, requests = [], []
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
                                                       viewport={"width": 1280, "height": 900})
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"failed request: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto((site / "index.html").as_uri())
            page.click(f'a[href="pools/{ND}.html"]')
            assert page.url.endswith(f"/pools/{ND}.html")
            # the leaderboard's first row, ET column: a link to one of the runs behind the number
            cell = page.locator("main table").first.locator("tbody tr").first.locator("td").nth(2).locator("a")
            number = cell.inner_text()
            cell.click()
            assert "/runs/" in page.url and page.locator("h1").inner_text().startswith("shaspec_random_seed")
            assert page.locator("svg.curve polyline").count() == 3  # dice, bce, total
            page.go_back()
            assert page.url.endswith(f"/pools/{ND}.html") and number
            dice = page.locator(f'table[id="dice_{ND}"]')
            head = dice.locator("thead tr").last.locator("th").nth(7)  # subset, 4 presence columns, then ET: mean_fill, shaspec, zero_fill
            column = head.inner_text().strip()

            def values() -> list[float]:
                cells = dice.locator("tbody tr").evaluate_all("rows => rows.map(r => r.cells[7].getAttribute('data-v'))")
                return [float(v) for v in cells]

            before = values()
            head.click()
            assert values() == sorted(before, reverse=True) and head.get_attribute("aria-sort") == "descending"
            head.click()
            assert values() == sorted(before) and head.get_attribute("aria-sort") == "ascending"
            assert dice.locator("tfoot tr").first.locator("th").inner_text() == "Avg"  # the Avg row stays below
            page.evaluate("window.scrollTo(0, 0)")
            shot = tmp_path / "site.png"
            page.screenshot(path=str(shot), clip={"x": 0, "y": 0, "width": 1280, "height": 900})
        finally:
            browser.close()
    assert column == "zero_fill"
    assert not errors, errors
    assert requests and all(u.startswith("file://") for u in requests), sorted({u for u in requests if not u.startswith("file://")})
    assert shot.stat().st_size > 10_000
    if os.environ.get("MISSBENCH_UPDATE_SCREENSHOT") or not SCREENSHOT.exists():  # the docs' figure, refreshed on request
        shutil.copyfile(shot, SCREENSHOT)
