#!/usr/bin/env python
"""Regenerate every figure README.md quotes under "Measured here": run the commands the README shows on
this machine and rewrite the section between its markers with what they gave, the commit and the machine.

    python scripts/measured.py                       # everything: about 45 minutes on an idle 2-core CPU
    python scripts/measured.py --only main,benchmarks
    python scripts/measured.py --budget smoke --readme /tmp/README.md   # a quick trial of the mechanics

Runs go to results/measured/<job>/ and are skipped when done, like any sweep, so an interrupted call resumes (the
sweeps' costs are read from their models' meta.json, not from this call's clock); --fresh deletes them first.
Nothing in the section is typed by hand: a figure that is not produced here is not in the README.
"""

from __future__ import annotations

import argparse
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from missbench.store.run_folder import load_rows, sweep_models  # noqa: E402

BEGIN, END = "<!-- measured:begin", "<!-- measured:end -->"
OUT = ROOT / "results" / "measured"


def run(cmd: list[str]) -> tuple[str, float, float]:
    """Run a command from the checkout; its stdout, wall seconds and CPU seconds. A failing command stops the script."""
    print("$ " + " ".join(cmd), flush=True)
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    res = subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, capture_output=True, text=True)
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} exited {res.returncode}:\n{res.stderr[-2000:]}")
    return res.stdout, wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def sweep_command(words: list[str], sweep: Path, budget: str | None) -> str:
    """Run ``python bench.py <words>`` into ``sweep`` (and the trial budget, if any); returns the command as the README
    shows it."""
    run(["python", "bench.py", *words, "--out", str(sweep), "--no-progress", *(["--budget", budget] if budget else [])])
    return "python bench.py " + " ".join(words)


def seg_summary(rows: pd.DataFrame) -> dict[str, dict[str, tuple[float, float]]]:
    """Per method: (mean, std over seeds) of the Avg Dice (%) over the evaluated subsets of ET, TC and WT (per seed: mean
    over cases, then over subsets) and of the full-modality WT."""
    d = rows[(rows.metric == "dice") & rows.region.isin(["ET", "TC", "WT"])]
    out = {}
    for method, g in d.groupby("variant"):
        per_seed = []
        for _, s in g.groupby("seed"):
            per = s.groupby(["eval_subset", "region"]).value.mean().unstack("region") * 100
            full = s[s.n_available == s.n_available.max()]
            per_seed.append({**per.mean().to_dict(), "full_WT": 100 * full[full.region == "WT"].value.mean()})
        frame = pd.DataFrame(per_seed)
        out[method] = {k: (float(frame[k].mean()), float(frame[k].std(ddof=1)) if len(frame) > 1 else float("nan")) for k in frame}
    return out


def model_timings(sweep: Path) -> list[tuple[str, dict[str, float], list[dict[str, float]]]]:
    """(method, the model's timings, each finished score's timings) of every finished model of ``sweep``, from their
    meta.json."""
    return [(folder.spec().method, folder.meta()["timings"], [s.meta()["timings"] for s in folder.scores() if s.is_done()])
            for folder in sweep_models(sweep) if folder.is_done()]


def run_seconds(sweep: Path) -> dict[str, dict[str, float]]:
    """Per method: training and evaluation seconds and seconds per iteration, the mean over its models (the model's and
    its first score's meta.json)."""
    per: dict[str, list[dict[str, float]]] = {}
    for method, model, scores in model_timings(sweep):
        per.setdefault(method, []).append({**model, **(scores[0] if scores else {})})
    return {m: pd.DataFrame(t).mean().to_dict() for m, t in per.items()}


def compute_minutes(sweep: Path) -> str:
    """The models of ``sweep`` and their training plus evaluation time in all, from their meta.json: what its commands
    cost, the same whether this script trained them now or an earlier, interrupted call did (models are never redone)."""
    timings = model_timings(sweep)
    spent = sum(model.get("train_seconds", 0.0) + sum(s.get("eval_seconds", 0.0) for s in scores) for _, model, scores in timings)
    return f"{len(timings)} models, {spent / 60:.1f} min of training and evaluation in all (their meta.json)"


def main_job(budget: str | None) -> list[str]:
    sweep = OUT / "main"
    commands = [sweep_command(["--protocol", "non_dedicated", "--methods", methods, "--seeds", "0,1,2"], sweep, budget)
                for methods in ("shaspec,zero_fill", "shaspec,smil")]
    lines = [f"- `{commands[0]}`, then `{commands[1]}` (shaspec's models are reused): {compute_minutes(sweep)}."]
    dice, secs = seg_summary(load_rows(sweep)), run_seconds(sweep)
    lines.append("  Avg Dice (%) over the 15 subsets, ET / TC / WT, and the full-modality WT, mean ± std over the 3 seeds "
                 "(the README's main command trains seed 0 alone):")
    for method, v in dice.items():
        t = secs[method]
        lines.append(f"  {method} " + " / ".join(f"{v[k][0]:.1f} ± {v[k][1]:.1f}" for k in ("ET", "TC", "WT"))
                     + f" (full-modality WT {v['full_WT'][0]:.1f} ± {v['full_WT'][1]:.1f}); "
                     f"training {t['train_seconds']:.0f} s ({t['train_seconds_per_iteration']:.3f} s per iteration), "
                     f"evaluation {t['eval_seconds']:.0f} s per model.")
    return lines


def classification(budget: str | None) -> list[str]:
    lines = []
    for protocol, methods in (("audio_rate", "shaspec,smil,zero_fill"), ("missing_slots", "ul4m4,smil,shaspec,cmml,hemis,uhved")):
        sweep = OUT / protocol
        cmd = sweep_command(["--protocol", protocol, "--methods", methods, "--threads", "1"], sweep, budget)
        rows = load_rows(sweep)
        correct = rows[rows.metric == "correct"]
        acc = correct.groupby(["variant", "missing_rate"]).value.mean().unstack("missing_rate") * 100
        rate = "r (share of training samples with audio)" if protocol == "audio_rate" else "p (slot-missing probability)"
        n_test = correct.groupby(["run_id", "condition"]).size().max()
        lines.append(f"- `{cmd}`: {compute_minutes(sweep)}; test accuracy (%) at {rate} = "
                     + " / ".join(f"{r:g}" for r in acc.columns) + f", {n_test} test samples per condition "
                     f"(one sample is {100 / n_test:.2f} points):")
        lines += [f"  {m} " + " / ".join(f"{v:.1f}" for v in acc.loc[m]) + f" (mean {acc.loc[m].mean():.1f})" for m in acc.index]
    lines.append("  One seed each: differences of a few points are within noise.")
    return lines


def smoke(budget: str | None) -> list[str]:
    """Seconds of each shipped protocol's smoke budget, from scratch: a new user's first try."""
    lines = ["- `python bench.py --protocol P --methods shaspec,zero_fill --budget smoke --threads 1`, from scratch, "
             "wall (CPU) seconds:"]
    times = []
    for protocol in ("non_dedicated", "dedicated", "alpha_beta", "dao_loss", "audio_rate", "missing_slots", "timing"):
        sweep = OUT / "smoke" / protocol
        shutil.rmtree(sweep, ignore_errors=True)
        _, wall, cpu = run(["python", "bench.py", "--protocol", protocol, "--methods", "shaspec,zero_fill", "--budget", "smoke",
                            "--threads", "1", "--no-progress", "--out", str(sweep)])
        times.append(f"{protocol} {wall:.1f} ({cpu:.1f})")
    return lines + ["  " + ", ".join(times) + "."]


def rescore(budget: str | None) -> list[str]:
    """CPU seconds of train+score against scoring the finished model again under another metric policy, per method."""
    lines = ["- Train+score, then `python bench.py evaluate SWEEP --metric empty=nan --metric hd95=max_directed` "
             "(the finished model scored again, nothing trained), CPU seconds, from scratch:"]
    for method in ("shaspec", "zero_fill"):
        sweep = OUT / "rescore" / method
        shutil.rmtree(sweep, ignore_errors=True)
        _, _, fresh = run(["python", "bench.py", "--protocol", "non_dedicated", "--methods", method, "--no-progress",
                           "--out", str(sweep), *(["--budget", budget] if budget else [])])
        _, _, again = run(["python", "bench.py", "evaluate", str(sweep), "--metric", "empty=nan", "--metric", "hd95=max_directed",
                           "--no-progress"])
        lines.append(f"  {method}: train+score {fresh:.0f} s, score again {again:.0f} s ({fresh / again:.1f}x less).")
    return lines


BENCHMARKS = [
    ["benchmarks/cli_speed.py"],
    ["benchmarks/subset_eval.py", "--methods", "shaspec,hemis,mean_fill,uhved,smil", "--repeats", "2"],
    ["benchmarks/train_overhead.py", "--methods", "shaspec,zero_fill,hemis,smil,ul4m4", "--iterations", "10"],
    ["benchmarks/memory.py", "--methods", "shaspec,hemis,uhved,mean_fill,zero_fill,smil,rfnet"],
    ["benchmarks/data_loading.py"],
    ["benchmarks/scoring.py", "--cases", "2"],
]


def benchmarks(budget: str | None) -> list[str]:
    lines = []
    for args in BENCHMARKS:
        out, _, _ = run(["python", *args])
        lines += [f"- `python {' '.join(args)}`:", "", "  ```", *("  " + line for line in out.strip().splitlines()), "  ```"]
    return lines


JOBS: dict[str, Callable[[str | None], list[str]]] = {"main": main_job, "rescore": rescore, "classification": classification,
                                                     "smoke": smoke, "benchmarks": benchmarks}


def machine() -> str:
    """Commit, CPU (model, cores, the instruction set torch dispatches to), packages and date: what the figures depend on."""
    import torch

    from missbench.store.provenance import device_info, git_state, versions

    git, dev = git_state(ROOT), device_info(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = dev["device_name"] if dev["device"] == "cuda" else "no GPU"
    return (f"Commit {(git['git_sha'] or 'unknown')[:7]}{' with uncommitted changes' if git['git_dirty'] else ''}; {dev['cpu']}, "
            f"{dev['cpu_cores']} cores, torch's {dev['cpu_capability']} kernels, {gpu}; torch {torch.__version__}, "
            f"Python {platform.python_version()}, {versions()['installed']} (listed below); {time.strftime('%Y-%m-%d')}.")


def packages() -> list[str]:
    """The installed distributions, name==version, as a collapsed block: the set the figures were measured with
    (configs/constraints.txt pins it for the README's setup and CI)."""
    from importlib import metadata

    installed = sorted({f"{d.metadata['Name']}=={d.version}".lower() for d in metadata.distributions()})
    return ["", "<details><summary>The installed packages</summary>", "", "```", *installed, "```", "", "</details>"]


def rewrite(readme: Path, body: list[str]) -> None:
    """Replace the section between the markers of ``readme`` by ``body``."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: no '{BEGIN} ... {END}' markers to write between")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + BEGIN + " (scripts/measured.py writes this section; do not edit it) -->\n" + "\n".join(body) + "\n" + END + tail)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(JOBS), help=f"comma-separated jobs of {list(JOBS)}")
    p.add_argument("--budget", default=None, help="a budget other than the protocols' defaults (a trial: the README quotes defaults)")
    p.add_argument("--fresh", action="store_true", help="delete earlier runs first")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = p.parse_args()
    if args.fresh:
        shutil.rmtree(OUT, ignore_errors=True)
    body = [f"{machine()} Every figure is what the command beside it gave there; "
            "`python scripts/measured.py` regenerates them all.", ""]
    for name in args.only.split(","):
        body += JOBS[name](args.budget)
    rewrite(args.readme, body + packages())
    print(f"wrote the measured section of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
