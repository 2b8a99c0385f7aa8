"""``bench.py list``: the registered methods (with parameter counts), data sets and protocols."""

from __future__ import annotations

import argparse

from missbench.cli.args import root_option
from missbench.core.method import count_parameters
from missbench.core.tasks import get_task
from missbench.experiment import registry
from missbench.experiment.protocol import load_protocol
from missbench.experiment.root import use_root


def list_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py list", description="List registered methods, data sets and protocols.")
    root_option(p)
    p.add_argument("--methods", action="store_true", help="methods only, with parameter counts")
    p.add_argument("--datasets", action="store_true")
    p.add_argument("--protocols", action="store_true")
    args = p.parse_args(argv)
    use_root(args.root)
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
