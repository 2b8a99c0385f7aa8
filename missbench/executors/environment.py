"""What a job inherits from the submitting process."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from missbench.experiment import root as benchmark_root


@contextlib.contextmanager
def importable() -> Iterator[None]:
    """Jobs import ``missbench`` from the checkout this process runs, even when it is not pip-installed,
    and read their plugins from this process's benchmark root (``$MISSBENCH_ROOT``, whatever their
    working directory). They inherit the submitting environment: the subprocess environment for local
    jobs, sbatch's --export=ALL default for SLURM."""
    old = {key: os.environ.get(key) for key in ("PYTHONPATH", benchmark_root.ENV)}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(benchmark_root.PACKAGE_CHECKOUT), old["PYTHONPATH"]) if p)
    os.environ[benchmark_root.ENV] = str(benchmark_root.root())
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value
