#!/usr/bin/env python
"""Training-patch sampling from the memory-mapped preprocessing cache, in samples per second.

    python benchmarks/data_loading.py                       # synthetic cases of real cropped BraTS size
    python benchmarks/data_loading.py --dataset-param root=/data/BraTS2018/train --dataset-param split=all

The trainer samples patches in-process (missbench/core/tasks/segmentation.py PatchSampler: the protocol's patch
pipeline, missbench/core/tasks/sampling.py, then stacking) from `Brats2018.load`'s copy-on-write memory maps. This
times that path at the BraTS protocols' paper budgets (A: RFNet's pipeline, 80^3, batch 2; B: ShaSpec's
pipeline, 80x160x160, batch 1), so the cost per training step
can be set against a GPU step. Without --dataset-param root=..., it writes ``--cases`` random cases of
the median RFNet crop size (4 x 146 x 169 x 134, float32, ~53 MB each) into a temporary cache first;
the page cache is then warm, as it is after the first epoch on a machine whose RAM holds the cache.
Wall and CPU time are both printed: on a shared machine the wall time includes waiting for a core.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from missbench.realdata import cache  # noqa: E402
from missbench.experiment import registry  # noqa: E402
from missbench.cli.args import key_values  # noqa: E402
from missbench.core.dataset import Case  # noqa: E402
from missbench.experiment.protocol import load_protocol  # noqa: E402
from missbench.core.tasks.segmentation import PatchSampler  # noqa: E402

#: D x H x W of a typical RFNet crop of a BraTS2018 case (axes as the cache stores them).
CROP = (146, 169, 134)


def synthetic_cases(folder: Path, n: int, rng: np.random.Generator) -> list[Case]:
    """``n`` random cases written with the cache's own writer and read back memory-mapped."""
    for i in range(n):
        target = np.zeros(CROP, np.uint8)
        c = rng.integers(40, 90, 3)
        target[c[0] - 20 : c[0] + 20, c[1] - 25 : c[1] + 25, c[2] - 20 : c[2] + 20] = 2  # ~100k tumour voxels
        image = rng.standard_normal((4, *CROP), dtype=np.float32)
        cache.write_case(folder, f"case{i}", {"image": image, "target": target}, {}, {}, {"name": "benchmark"})
    out = []
    for i in range(n):
        arrays, _ = cache.read_case(folder, f"case{i}")
        out.append(Case(f"case{i}", arrays["image"], arrays["target"]))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=4, help="synthetic cases (without --dataset-param root=...)")
    p.add_argument("--batches", type=int, default=20, help="batches timed per budget, after 2 warm-up")
    p.add_argument("--dataset-param", action="append", default=[], metavar="KEY=VALUE", help="read a prepared brats2018 cache instead")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.dataset_param:
            params = key_values(args.dataset_param, "--dataset-param")
            ds = registry.dataset_class("brats2018")(**params)
            cases = [ds.load(c) for c in ds.case_ids("train")]
            source = f"{len(cases)} cached brats2018 training cases ({ds.cache_folder})"
        else:
            cases = synthetic_cases(Path(tmp), args.cases, rng)
            source = f"{len(cases)} synthetic cases of {list(CROP)} in a temporary cache"
        print(f"{source}; one process, warm page cache")
        for proto in ("brats2018_a", "brats2018_b"):
            protocol = load_protocol(registry.protocol_path(proto))
            _, budget, _ = protocol.budget("paper")
            pipeline = protocol.training["sampler"]
            t0 = time.perf_counter()
            sampler = PatchSampler(cases, budget.patch, rng, pipeline)
            t_index = time.perf_counter() - t0
            index_mb = sum(r.wt.nbytes + sum(v.nbytes for v in r.subsets.values()) for r in sampler.regions) / 2**20
            for _ in range(2):
                sampler.sample(budget.batch)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.batches):
                x, _ = sampler.sample(budget.batch)
            dt, cpu = ((t - t_start) / args.batches for t, t_start in ((time.perf_counter(), t0), (time.process_time(), c0)))
            print(f"{proto} paper budget ({pipeline} pipeline, patch {list(budget.patch)}, batch {budget.batch}): {dt * 1e3:.1f} ms per batch "
                  f"({cpu * 1e3:.1f} ms of CPU), {budget.batch / dt:.1f} samples/s, {x.numel() * 4 / 2**20:.0f} MB per batch; "
                  f"sampler set-up {t_index:.2f} s, region index {index_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
