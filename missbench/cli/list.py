"""``bench.py list``: the registered methods (with parameter counts), data sets and protocols."""

from __future__ import annotations

import argparse
import gc

from missbench.cli.args import root_option
from missbench.experiment import registry
from missbench.experiment.root import use_root

#: The data set whose modalities and task the parameter counts are for.
COUNTED_ON = "brats_synthetic"


def parameter_counts(cls: type, task: object, modalities: tuple[str, ...]) -> dict[str, int]:
    """Trainable parameters with the paper's architecture ("paper") and on the harness's common blocks
    ("common"), each architecture built once, on the meta device; {} when the method does not support the task.
    A method without a ``backbone`` parameter has one architecture, counted in both columns."""
    from missbench.core.method import count_on_meta

    if "backbone" not in cls.defaults:
        try:
            n = count_on_meta(cls, task, modalities)
        except ValueError:
            return {}
        return {"paper": n, "common": n}
    rule = cls.constraints.get("backbone")
    counts = {}
    for backbone in rule.values if rule is not None else (cls.defaults["backbone"],):
        try:
            counts["common" if backbone == "common" else "paper"] = count_on_meta(cls, task, modalities, backbone=backbone)
        except ValueError:
            continue
    return counts


def counts_or_error(cls: type, task: object, modalities: tuple[str, ...]) -> tuple[dict[str, int], str]:
    """`parameter_counts`, or ({}, the one-line error) when building the method raises anything else (a broken
    ``__init__``): one method's bug must not take `list` down."""
    try:
        return parameter_counts(cls, task, modalities), ""
    except Exception as e:  # noqa: BLE001 - a plugin's own code may raise anything
        return {}, registry.one_line(e)


def list_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py list", description="List registered methods, data sets and protocols.")
    root_option(p)
    p.add_argument("--methods", action="store_true", help="methods only, with parameter counts")
    p.add_argument("--datasets", action="store_true")
    p.add_argument("--protocols", action="store_true")
    args = p.parse_args(argv)
    use_root(args.root)
    # A short command that makes no garbage worth collecting: without the collector, importing torch and
    # building 14 architectures skip its rescans of an ever larger heap (0.2-0.3 s of CPU).
    gc.disable()
    try:
        return print_lists(args)
    finally:
        gc.enable()


def print_lists(args: argparse.Namespace) -> int:
    """The methods (with parameter counts), data sets and protocols that ``args`` asks for."""
    every = not (args.methods or args.datasets or args.protocols)
    if every or args.methods:
        from missbench.core.tasks import get_task

        counted = COUNTED_ON in registry.dataset_names()
        ds = registry.dataset_class(COUNTED_ON) if counted else None
        task = get_task(ds.task) if ds is not None else None
        found = registry.plugins("methods")
        print(f"methods: parameters on {COUNTED_ON}'s modalities with the paper's architecture and with --backbone common"
              if counted else f"methods (no parameter counts: the data set {COUNTED_ON} they are counted on is not visible)")
        print(f"  {'name':<12} {'from':<7} {'paper':>12} {'common':>12}  citation")
        for name in registry.method_names():
            cls = registry.method_class(name)
            counts, error = counts_or_error(cls, task, ds.modalities) if ds is not None else ({}, "")
            paper, common = (f"{counts[k]:,}" if k in counts else "-" for k in ("paper", "common"))
            print(f"  {name:<12} {found.source[name]:<7} {paper:>12} {common:>12}  " + (f"cannot be built: {error}" if error else cls.citation))
        broken(found)
    if every or args.datasets:
        found = registry.plugins("datasets")
        print("datasets:")
        for name in registry.dataset_names():
            cls = registry.dataset_class(name)
            print(f"  {name:<16} {found.source[name]:<7} {cls.task:<13} {'+'.join(cls.modalities):<20} {cls.description}")
        broken(found)
    if every or args.protocols:
        from missbench.experiment.protocol import ProtocolError, load_protocol

        print("protocols:")
        for name, (path, source) in sorted(registry.protocol_files().items()):
            try:
                proto = load_protocol(path)
            except (ProtocolError, registry.UnknownName) as e:
                print(f"  {name:<16} {source:<7} cannot be read: {e}")
                continue
            print(f"  {name:<16} {source:<7} {proto.mode:<14} budgets: {', '.join(proto.budgets)}  {proto.description}")
    return 0


def broken(found: registry.Plugins) -> None:
    """The plugin files of a folder that did not load, each with its one-line reason."""
    for where, why in sorted(found.broken.items()):
        print(f"  broken: {where}: {why}")
