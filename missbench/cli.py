"""Command line: ``bench.py [run options]`` runs a protocol; ``bench.py list`` shows what is registered."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from missbench import registry
from missbench.method import count_parameters
from missbench.protocol import ProtocolError, load_protocol
from missbench.registry import ROOT, UnknownName
from missbench.runner import run
from missbench.spec import Execution
from missbench.store import is_done, load_rows
from missbench.tables import dice_summary, format_table
from missbench.tasks import get_task


class UsageError(Exception):
    """A bad command line: printed as one line, exit status 2."""


def _key_values(items: list[str], what: str) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.py", description="Run a MissBench protocol. `bench.py list` lists methods, data sets and protocols.")
    p.add_argument("--protocol", default="non_dedicated", help="protocol name (protocols/<name>.yaml) or path")
    p.add_argument("--methods", required=True, help="comma-separated method names")
    p.add_argument("--dataset", default=None, help="data set name (default: the protocol's, else brats_synthetic)")
    p.add_argument("--budget", default=None, help="a budget named in the protocol file (smoke, default, paper)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the protocol's)")
    p.add_argument("--out", default=None, type=Path, help="sweep folder (default results/<protocol>_<dataset>_<budget>)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: all cores)")
    p.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE", help="method parameter override")
    p.add_argument("--backbone", choices=("paper", "common"), default=None,
                   help="common: every method that has a `backbone` parameter on the harness's shared U-Net blocks")
    p.add_argument("--dataset-param", action="append", default=[], metavar="KEY=VALUE", help="data set parameter override")
    p.add_argument("--training", action="append", default=[], metavar="KEY=VALUE",
                   help="training override for every method, e.g. schedule=poly or dropout=uniform_subset")
    p.add_argument("--force", action="store_true", help="rerun finished runs")
    p.add_argument("--dry-run", action="store_true", help="list the runs and do nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-channels-last", action="store_true", help="keep 3-D tensors contiguous (channels-last is faster on CPU)")
    return p


def list_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py list", description="List registered methods, data sets and protocols.")
    p.add_argument("--methods", action="store_true", help="methods only, with parameter counts")
    p.add_argument("--datasets", action="store_true")
    p.add_argument("--protocols", action="store_true")
    args = p.parse_args(argv)
    every = not (args.methods or args.datasets or args.protocols)
    if every or args.methods:
        ds = registry.dataset_class("brats_synthetic")
        print("methods: parameters on brats_synthetic's modalities with the paper's architecture and with --backbone common")
        print(f"  {'name':<12} {'paper':>12} {'common':>12}  citation")
        for name in registry.method_names():
            cls = registry.method_class(name)
            counts = {}
            for backbone in ("paper", "official", "common"):
                params = {"backbone": backbone} if "backbone" in cls.defaults else {}
                try:
                    counts.setdefault("common" if backbone == "common" else "paper", count_parameters(cls(get_task(ds.task), ds.modalities, **params)))
                except ValueError:
                    continue
            paper, common = (f"{counts[k]:,}" if k in counts else "-" for k in ("paper", "common"))
            print(f"  {name:<12} {paper:>12} {common:>12}  {cls.citation}")
    if every or args.datasets:
        print("datasets:")
        for name in registry.dataset_names():
            cls = registry.dataset_class(name)
            print(f"  {name:<16} {cls.task:<13} {'+'.join(cls.modalities):<20} {cls.description}")
    if every or args.protocols:
        print("protocols:")
        for name in registry.protocol_names():
            proto = load_protocol(registry.protocol_path(name))
            print(f"  {name:<16} {proto.mode:<14} budgets: {', '.join(proto.data['budgets'])}  {proto.data.get('description', '')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["list"]:
            return list_command(argv[1:])
        return run_command(run_parser().parse_args(argv))
    except (UsageError, UnknownName, ProtocolError) as e:
        print(f"bench.py: error: {e}", file=sys.stderr)
        return 2


def run_command(args: argparse.Namespace) -> int:
    protocol = load_protocol(registry.protocol_path(args.protocol))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise UsageError("--methods: give at least one method name")
    for m in methods:
        registry.method_class(m)
    dataset_cls = registry.dataset_class(args.dataset or protocol.data.get("dataset", "brats_synthetic"))
    method_params: dict[str, dict[str, Any]] = {}
    for key, value in _key_values(args.param, "--param").items():
        method, dot, name = key.partition(".")
        if not dot or method not in methods:
            raise UsageError(f"--param {key}: expected METHOD.KEY with METHOD one of {methods}")
        method_params.setdefault(method, {})[name] = value
    if args.backbone == "common":
        for m in methods:
            if "backbone" in registry.method_class(m).defaults:
                method_params.setdefault(m, {}).setdefault("backbone", "common")
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        raise UsageError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
    specs = protocol.expand(methods, dataset_cls, _key_values(args.dataset_param, "--dataset-param"), args.budget, seeds,
                            method_params, _key_values(args.training, "--training"))
    budget = specs[0].budget_name if specs else args.budget
    sweep = args.out or ROOT / "results" / f"{protocol.name}_{dataset_cls.name}_{budget}"
    # Refuse bad method or data set parameters before anything is written.
    for spec in {(s.method, repr(s.method_params)): s for s in specs}.values():
        try:
            cls = registry.method_class(spec.method)
            cls(get_task(dataset_cls.task), dataset_cls.modalities, **spec.method_params) if dataset_cls.task in cls.tasks else None
            cls.training.replace(**spec.training)
            dataset_cls(**spec.dataset_params)
        except (ValueError, TypeError) as e:
            raise UsageError(str(e)) from None
    if args.dry_run:
        print(f"{len(specs)} runs into {sweep}:")
        for s in specs:
            state = "done" if is_done(sweep / s.run_id) else "todo"
            print(f"  [{state}] {s.run_id}  {s.method} {s.method_params or ''} train={s.train_subset or 'random'} "
                  f"seed={s.seed} budget={s.budget_name} ({s.budget.iterations} it, patch {list(s.budget.patch)}, batch {s.budget.batch})")
        return 0
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    exe = Execution(args.device, not args.no_channels_last, not args.no_progress)
    ran = []
    for i, spec in enumerate(specs, 1):
        cls = registry.method_class(spec.method)
        if dataset_cls.task not in cls.tasks:
            print(f"[{i}/{len(specs)}] {spec.run_id}: skipped, {spec.method} does not support task {dataset_cls.task!r}")
            continue
        t0 = time.perf_counter()
        state = run(spec, sweep, exe, args.force)
        print(f"[{i}/{len(specs)}] {spec.run_id}: {state} ({time.perf_counter() - t0:.1f} s)", flush=True)
        ran.append(spec.run_id)
    rows = load_rows(sweep, ran)
    if not rows.empty:
        print(f"\nDice (%), {protocol.name} protocol, {dataset_cls.name}, budget {budget}, test split, "
              f"mean over cases{' and seeds' if len({s.seed for s in specs}) > 1 else ''}; "
              f"empty policy '{rows.empty_policy.iloc[0]}'; ET without post-processing:")
        print(format_table(dice_summary(rows)))
    print(f"\nresults: {sweep}")
    return 0
