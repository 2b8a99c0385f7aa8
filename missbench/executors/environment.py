"""What a job inherits from the submitting process."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from missbench.experiment import registry


@contextlib.contextmanager
def importable() -> Iterator[None]:
    """Jobs import ``missbench`` from this checkout even when it is not pip-installed (they inherit
    the submitting environment: subprocess env for local, sbatch's --export=ALL default for SLURM)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(registry.ROOT), old) if p)
    try:
        yield
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
