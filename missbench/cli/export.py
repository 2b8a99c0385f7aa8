"""``bench.py export``: label maps of finished models for the BraTS portal (missbench/realdata/export.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from missbench.cli.args import UsageError, key_values, root_option
from missbench.core.execution import Execution, set_threads
from missbench.experiment.root import use_root
from missbench.experiment.validate import check_options
from missbench.realdata.export import export_model, model_folders


def export_command(argv: list[str]) -> int:
    """``bench.py export RUN_OR_SWEEP --out DIR [--subsets all|A,B] [--et-postprocess] [--dataset-param K=V] [--threads T]``."""
    p = argparse.ArgumentParser(prog="bench.py export", description="Write one NIfTI label map per case of the data set's "
                                "export split (protocol B: the official validation cases) for each chosen subset.")
    root_option(p)
    p.add_argument("path", type=Path, help="a finished model folder, or a sweep folder (every finished model in it)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--subsets", default=None, help="comma-separated subsets, or 'all' for the model's evaluation subsets "
                   "(default: the last one, the full set)")
    p.add_argument("--et-postprocess", action="store_true", help="relabel a predicted ET under et_threshold voxels as necrotic core")
    p.add_argument("--dataset-param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a data set parameter of the run, e.g. val_root=DIR (paths only: a different recipe changes the model's input)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for inference (default: all cores; on a loaded "
                   "machine one thread can be many times faster)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    use_root(args.root)
    try:
        check_options({"threads": args.threads, "device": args.device})
        set_threads(args.threads)
        overrides = key_values(args.dataset_param, "--dataset-param")
        for model in model_folders(args.path):
            asked = next(iter((model.request().get("scores") or {}).values()), {})
            subsets = list(asked.get("subsets", [])) if args.subsets == "all" else args.subsets.split(",") if args.subsets else None
            folder = export_model(model, args.out, Execution(args.device, progress=not args.no_progress), subsets,
                                  args.et_postprocess, overrides)
            print(f"exported {model.model_id}: {folder}")
    except (UsageError, ValueError, KeyError, FileNotFoundError) as e:
        print(f"bench.py export: error: {e}", file=sys.stderr)
        return 2
    return 0
