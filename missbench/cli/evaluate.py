"""``bench.py evaluate PATH``: score finished models again, under a protocol's or the command line's evaluation
settings, without training (missbench/engine/rescore.py); ``--released MANIFEST`` imports a released
checkpoint as a model first."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from missbench.cli.args import UsageError, key_values, root_option
from missbench.experiment import registry
from missbench.experiment.root import use_root


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.py evaluate", description=(
        "Score the finished models at PATH (a model folder, a sweep folder or a store such as results/) again: under "
        "--protocol's evaluation settings, else each model's first score's, with any setting replaced below. A list of "
        "values per --metric setting gives one score per combination. Nothing is trained; scores done before are kept."))
    root_option(p)
    p.add_argument("path", type=Path, nargs="?", default=None, help="model, sweep or store folder (default: the root's results/)")
    p.add_argument("--methods", default=None, help="only the models of these methods (comma-separated)")
    p.add_argument("--model", action="append", default=[], metavar="MODEL_ID", help="only this model (repeatable)")
    p.add_argument("--protocol", default=None, help="take the evaluation settings of this protocol (name or path)")
    p.add_argument("--budget", default=None, help="the protocol budget whose overlap and data set parameters apply")
    p.add_argument("--metric", action="append", default=[], metavar="KEY=V1[,V2...]",
                   help="metric policy setting(s): empty=one,nan  hd95=pooled,max_directed  et_threshold=500")
    p.add_argument("--subsets", default=None, help="comma-separated evaluation subsets (default: the protocol's or the model's)")
    p.add_argument("--window", choices=("uniform", "gaussian"), default=None, help="sliding-window weighting")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap in [0, 1)")
    p.add_argument("--dataset", default=None, help="score on another data set with the same modalities (its test split)")
    p.add_argument("--dataset-param", action="append", default=[], metavar="KEY=VALUE", help="parameter of the scored data set")
    p.add_argument("--released", type=Path, default=None, metavar="MANIFEST",
                   help="import a released checkpoint (a manifest YAML: method, params, file, sha256, source, trained_on) "
                        "into PATH as a model, then score it")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--force", action="store_true", help="score again scores done before")
    p.add_argument("--no-progress", action="store_true")
    return p


def metric_lists(items: list[str]) -> dict[str, list[Any]]:
    """``--metric KEY=V1,V2`` items as {key: [values]}, each value checked against the metric policy's rules."""
    from missbench.core.metrics import POLICY_DEFAULTS, POLICY_RULES
    from missbench.experiment.validate import check_declared

    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not text:
            raise UsageError(f"--metric {item!r}: expected KEY=VALUE[,VALUE...]")
        values = [key_values([f"{key}={v}"], "--metric")[key] for v in text.split(",")]
        for v in values:
            check_declared("--metric", {key: v}, POLICY_DEFAULTS, POLICY_RULES)
        out[key] = list(dict.fromkeys(out.get(key, []) + values))
    return out


def evaluate_command(argv: list[str]) -> int:
    from missbench.cli.sweep import report
    from missbench.core.execution import Execution, available_cores, set_threads
    from missbench.engine.rescore import Settings, finished_models, requests
    from missbench.executors import Options, execute
    from missbench.experiment.protocol import load_protocol
    from missbench.experiment.root import root
    from missbench.experiment.validate import check_declared, check_options, check_specs

    args = evaluate_parser().parse_args(argv)
    use_root(args.root)
    check_options({"threads": args.threads, "device": args.device})
    path = args.path or root() / "results"
    if args.overlap is not None and not 0 <= args.overlap < 1:
        raise UsageError(f"--overlap={args.overlap}: expected a number in [0, 1)")
    dataset_params = key_values(args.dataset_param, "--dataset-param")
    if args.dataset is not None:
        cls = registry.dataset_class(args.dataset)
        check_declared("--dataset-param", dataset_params, cls.defaults, cls.constraints)
    protocol = load_protocol(registry.protocol_path(args.protocol)) if args.protocol else None
    settings = Settings(protocol, args.budget, args.subsets.split(",") if args.subsets else None, metric_lists(args.metric),
                        args.window, args.overlap, args.dataset, dataset_params)
    if args.released is not None:
        from missbench.engine.released import import_released

        folder = import_released(args.released, path)
        print(f"imported {args.released} as model {folder.model_id} in {folder.path.parent}")
        models = [folder]
    else:
        methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
        models = finished_models(path, methods, args.model or None)
    exe = Execution(args.device, progress=not args.no_progress)
    set_threads(args.threads)
    threads = (args.threads or available_cores()) if exe.torch_device.type == "cpu" else None
    by_sweep: dict[Path, list] = {}
    for folder in models:
        by_sweep.setdefault(folder.path.parent, []).extend(r.on_cpu_threads(threads, train=False) for r in requests(folder, settings))
    options = Options(force=args.force, rerun_failed=True, train=False)
    total, status = 0, 0
    for sweep, specs in by_sweep.items():
        check_specs(specs)
        done = execute(specs, sweep, exe, options, lambda line: print(line, flush=True))
        made = sum(len(job.runs) for job in done.todo)
        total += made
        print(f"{sweep}: {len(specs)} scores of {len({s.model.model_id for s in specs})} models; {made} made, "
              f"{len(specs) - made} done before")
        status = max(status, report(sweep, [s.run_id for s in specs]))
    print(f"made {total} score{'s' if total != 1 else ''}; nothing was trained")
    return status
