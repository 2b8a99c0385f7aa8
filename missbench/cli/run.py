"""``bench.py [run options]``: expand a protocol into run specs, check them all, then run or submit them."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from missbench.cli.args import UsageError, key_values, root_option
from missbench.executors import EXECUTORS, Options, execute, job_threads
from missbench.experiment import registry
from missbench.experiment.resources import load_file as load_resources
from missbench.experiment.resources import parse_flags as parse_resource_flags
from missbench.experiment.resources import resolve as resolve_resources
from missbench.experiment.root import root, use_root
from missbench.store.state import State

if TYPE_CHECKING:  # torch and pandas come with these: imported where a run needs them, so `--help` is fast
    from missbench.experiment.protocol import Protocol
    from missbench.experiment.spec import RunSpec


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.py", description="Run a MissBench protocol. `bench.py list` lists methods, data sets and protocols.")
    root_option(p)
    p.add_argument("--protocol", default="non_dedicated", help="protocol name (protocols/<name>.yaml) or path")
    p.add_argument("--methods", required=True, help="comma-separated method names")
    p.add_argument("--dataset", default=None, help="data set name (default: the protocol's, else brats_synthetic)")
    p.add_argument("--budget", default=None, help="a budget named in the protocol file (smoke, default, paper)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the protocol's)")
    p.add_argument("--out", default=None, help="sweep folder (default results/<protocol>_<dataset>_<budget>)")
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
    p.add_argument("--amp", choices=("auto", "off", "bf16"), default="off",
                   help="mixed precision: bf16 autocasts forward passes (changes rounding, so off by default); "
                        "auto: bf16 on a GPU that supports it, else off")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="wrap each method's forward in torch.compile (backend default inductor)")
    p.add_argument("--profile", action="store_true",
                   help="time data wait, forward, backward, optimiser, encode, decode and metric phases into each run's profile.json")
    g = p.add_argument_group("GPU training step (README: Speed, memory and devices); recorded in meta.json, off by default")
    g.add_argument("--tf32", action="store_true", help="float32 matmuls and convolutions on TF32 tensor cores (default: IEEE float32)")
    g.add_argument("--cudnn-benchmark", action="store_true", help="cuDNN times its convolution algorithms per input shape and keeps the fastest")
    g.add_argument("--fused-optimizer", action="store_true", help="the optimiser's fused kernel (Adam/SGD fused=True)")
    g.add_argument("--cuda-graphs", action="store_true",
                   help="replay the compiled step as CUDA graphs (torch.compile mode reduce-overhead; needs --compile on CUDA)")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms only (torch, cuDNN, cuBLAS workspace): bit-identical reruns on one GPU")
    g.add_argument("--prefetch", action=argparse.BooleanOptionalAction, default=None,
                   help="draw the next training batch during the current step (default: on a GPU, not on a CPU)")
    x = p.add_argument_group("execution (README: Running on a cluster)")
    x.add_argument("--executor", choices=EXECUTORS, default="inline",
                   help="inline: in this process; local: submitit subprocesses; slurm: submitit array jobs")
    x.add_argument("--jobs", type=int, default=1, help="local: runs at a time (one GPU each when there are GPUs)")
    x.add_argument("--resources", type=Path, default=None, help="slurm: resources YAML (configs/slurm.example.yaml)")
    x.add_argument("--resource", action="append", default=[], metavar="KEY=VALUE",
                   help="slurm: resource override, e.g. time=02:00:00, partition=gpu, gpus=1, cpus=8, mem=32G")
    x.add_argument("--array-parallelism", type=int, default=256, help="slurm: array tasks running at once")
    x.add_argument("--max-array-size", type=int, default=None, help="slurm: tasks per array (default: the cluster's MaxArraySize)")
    x.add_argument("--wait", action="store_true", help="slurm: wait for the jobs and print the table (default: return once queued)")
    x.add_argument("--rerun-failed", action="store_true", help="rerun runs that failed before (default: report them, run nothing)")
    x.add_argument("--allow-dirty", action="store_true", help="slurm: submit from a git tree with uncommitted changes")
    return p


def run_command(args: argparse.Namespace) -> int:
    from missbench.cli.sweep import report
    from missbench.core.execution import Execution, set_threads
    from missbench.experiment.protocol import MAX_SEED, load_protocol
    from missbench.experiment.validate import Given, check_options, check_out, check_sweep

    use_root(args.root)
    protocol = load_protocol(registry.protocol_path(args.protocol))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise UsageError("--methods: give at least one method name")
    dataset_cls = registry.dataset_class(args.dataset or protocol.dataset)
    for m in methods:
        supported = registry.method_class(m).tasks
        if dataset_cls.task not in supported:
            raise UsageError(f"--methods: {m} does not support task {dataset_cls.task!r} of data set {dataset_cls.name!r} "
                             f"(it supports {', '.join(supported)})")
    method_params: dict[str, dict[str, Any]] = {}
    for key, value in key_values(args.param, "--param").items():
        method, dot, name = key.partition(".")
        if not dot or method not in methods:
            raise UsageError(f"--param {key}: expected METHOD.KEY with METHOD one of {methods}")
        method_params.setdefault(method, {})[name] = value
    if args.backbone == "common":
        for m in methods:
            if "backbone" in registry.method_class(m).defaults:
                method_params.setdefault(m, {}).setdefault("backbone", "common")
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds is not None else None
    except ValueError:
        raise UsageError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
    if seeds is not None and not all(0 <= s <= MAX_SEED for s in seeds):
        raise UsageError(f"--seeds {args.seeds!r}: expected integers in [0, {MAX_SEED}]")
    given = Given(method_params, key_values(args.dataset_param, "--dataset-param"), key_values(args.training, "--training"))
    specs = protocol.expand(methods, dataset_cls, given.dataset_params, args.budget, seeds, method_params, given.training)
    budget = specs[0].budget_name if specs else args.budget
    if args.out is not None:
        check_out(args.out)
    sweep = Path(args.out) if args.out is not None else root() / "results" / f"{protocol.name}_{dataset_cls.name}_{budget}"
    check_sweep(specs, given, dataset_cls)
    check_options(vars(args), here=args.executor != "slurm")
    check_out(sweep)
    opts = execution_options(args, protocol, methods, dry=args.dry_run)
    if protocol.mode == "timing" and opts.executor == "inline":
        opts = dataclasses.replace(opts, executor="local", jobs=1)
        if not args.dry_run:
            print("timing: each model is measured in a fresh process (the local executor, one at a time), so that its peak "
                  "memory does not depend on what ran before it")
    try:
        exe = Execution(args.device, not args.no_channels_last, not args.no_progress, amp=resolve_amp(args.amp, args.device),
                        compile=args.compile, profile=args.profile, tf32=args.tf32, cudnn_benchmark=args.cudnn_benchmark,
                        fused_optimizer=args.fused_optimizer, cuda_graphs=args.cuda_graphs, deterministic=args.deterministic,
                        prefetch=args.prefetch)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if exe.amp == "bf16" and exe.torch_device.type == "cpu" and dataset_cls.task == "segmentation":
        raise UsageError("--amp bf16 on the CPU: torch's CPU bf16 backward of 3-D convolutions returns NaN gradients at "
                         "small spatial sizes (every timing smoke run failed with NaN losses), so segmentation on the CPU "
                         "trains in float32; use --amp off, or bf16 on a GPU")
    if exe.torch_device.type == "cpu":  # the thread count moves CPU floats: it is part of each model and score
        specs = [s.on_cpu_threads(job_threads(opts, s.model.method)) for s in specs]
    if args.dry_run:
        print(dry_run(specs, sweep))
        return 0
    set_threads(args.threads)
    done = execute(specs, sweep, exe, opts, lambda line: print(line, flush=True))
    if not done.ended:
        print(f"\n{len(done.todo)} models queued; `python bench.py status {sweep}` shows their states, "
              f"`python bench.py collect {sweep}` gathers the results")
        return 1 if any(state.state is State.FAILED for state in done.left.values()) else 0
    return report(sweep, [s.run_id for s in specs])


def dry_run(specs: list[RunSpec], sweep: Path) -> str:
    """What a run would do, per model: train, score a finished one, link one another sweep finished, or nothing."""
    from missbench.core.availability import missing_label
    from missbench.engine.run import finished_elsewhere
    from missbench.experiment.spec import jobs
    from missbench.store.run_folder import ModelFolder

    lines = [f"{len(specs)} scores of {len(jobs(specs))} models into {sweep}:"]
    for job in jobs(specs):
        folder, m = ModelFolder(sweep / job.model_id), job.model
        missing = [r for r in job.runs if not folder.score(r.score.score_id).is_done()]
        what = ("done" if not missing else "score") if folder.is_done() else \
            "link" if finished_elsewhere(folder) is not None else "train"
        rate = f" {missing_label(m.missing, m.missing_rate)}" if m.missing else ""
        patch = f", patch {list(m.patch)}" if m.patch is not None else ""
        b = job.first.budget
        lines.append(f"  [{what}] {job.model_id}  {m.method} {m.method_params or ''} train={m.train_subset or 'random'}{rate} "
                     f"seed={m.seed} budget={job.first.budget_name} ({b.iterations} it{patch}, batch {b.batch}); "
                     f"{len(job.runs) - len(missing)} of {len(job.runs)} scores done")
    return "\n".join(lines)


def resolve_amp(amp: str, device: str) -> str:
    """``--amp auto``: bf16 on a CUDA device that supports it, else off."""
    if amp != "auto":
        return amp
    import torch

    return "bf16" if torch.device(device).type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "off"


def execution_options(args: argparse.Namespace, protocol: Protocol, methods: list[str], dry: bool = False) -> Options:
    """Executor options with each method's resources (file < its method block < protocol < flags), checked
    before anything is written; refuses a SLURM submission from a dirty git tree unless --allow-dirty (or ``dry``:
    nothing is submitted)."""
    from missbench.store import provenance

    file = load_resources(args.resources, registry.method_names()) if args.resources else None
    flags = parse_resource_flags(args.resource)
    for m in methods:
        resolve_resources(m, file, protocol.slurm, flags)
    git = provenance.git_state(root()) if args.executor == "slurm" and not args.allow_dirty and not dry else {}
    if git.get("git_dirty"):
        untracked = git.get("git_untracked_plugins")
        raise UsageError(f"{root()} has uncommitted changes" + (f" (untracked: {', '.join(untracked)})" if untracked else "")
                         + ", which queued SLURM jobs would pick up when they start; commit them or pass --allow-dirty "
                         "(meta.json records the dirty flag)")
    return Options(executor=args.executor, jobs=args.jobs, array_parallelism=args.array_parallelism,
                   max_array_size=args.max_array_size, wait=args.wait, force=args.force, rerun_failed=args.rerun_failed,
                   threads=args.threads, resources=lambda m: resolve_resources(m, file, protocol.slurm, flags))
