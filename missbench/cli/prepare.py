"""``bench.py prepare``: fill a data set's preprocessing cache (missbench/realdata/prepare.py)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from missbench.cli.args import key_values, root_option
from missbench.core.execution import set_threads
from missbench.experiment import registry
from missbench.experiment.protocol import load_protocol
from missbench.experiment.root import use_root
from missbench.experiment.validate import check_options
from missbench.realdata.prepare import prepare


def dataset_params(protocol_name: str | None, budget: str | None, cli_params: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(protocol's data set name, parameters): a protocol budget's ``dataset:`` block, then the command line's,
    so `prepare` fills the cache that the run with the same options reads."""
    if protocol_name is None:
        return None, dict(cli_params)
    proto = load_protocol(registry.protocol_path(protocol_name))
    _, _, overrides = proto.budget(budget)
    return proto.dataset, {**overrides, **cli_params}


def prepare_command(argv: list[str]) -> int:
    """``bench.py prepare --dataset NAME [--protocol P --budget B] [--dataset-param K=V ...] [--jobs N] [--threads T] [--verify]``."""
    p = argparse.ArgumentParser(prog="bench.py prepare", description="Preprocess a data set once into its cache (resumable).")
    root_option(p)
    p.add_argument("--dataset", default=None, help="data set name (default: the protocol's)")
    p.add_argument("--protocol", default=None, help="take data set parameters from this protocol's budget")
    p.add_argument("--budget", default=None, help="the protocol budget whose dataset: block applies")
    p.add_argument("--dataset-param", action="append", default=[], metavar="KEY=VALUE",
                   help="data set parameter, e.g. root=DIR, val_root=DIR, split=..., recipe=shaspec, cache=DIR")
    p.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="cases processed in parallel")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of each case process (default: the cores / --jobs)")
    p.add_argument("--force", action="store_true", help="redo cases already in the cache")
    p.add_argument("--verify", action="store_true", help="rehash every source file and cached array (not only those whose "
                   "size or modification time changed) and redo the cases that differ")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    use_root(args.root)
    try:
        check_options({"jobs": args.jobs, "threads": args.threads})
        proto_dataset, params = dataset_params(args.protocol, args.budget, key_values(args.dataset_param, "--dataset-param"))
        name = args.dataset or proto_dataset
        if not name:
            raise ValueError("--dataset: give a data set name (or --protocol)")
        instance = registry.dataset_class(name).for_prepare(**params)
        if instance is None:
            print(f"bench.py prepare: {name} has nothing to prepare")
            return 0
        set_threads(args.threads, share=args.jobs)
        done = prepare(instance, args.jobs, not args.no_progress, args.force, args.verify)
    except ValueError as e:  # UnknownName, ProtocolError, PrepareError and the data set's own errors
        print(f"bench.py prepare: error: {e}", file=sys.stderr)
        return 2
    print(f"prepared {done['prepared']} case(s), {done['skipped']} already cached{' (verified)' if args.verify else ''}, "
          f"in {done['seconds']:.1f} s: {done['folder']}")
    return 0
