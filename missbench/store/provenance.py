"""Provenance recorded with every result: git SHA and dirty flag, plugin file hashes, versions, host,
device, memory."""

from __future__ import annotations

import hashlib
import os
import platform
import resource
import socket
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from missbench.core.execution import available_cores
from missbench.experiment.root import PLUGIN_FOLDERS
from missbench.store.run_folder import file_sha256

#: SLURM's ids of a job: its own, its array's and its index in the array, and how often it was requeued.
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", "SLURM_JOB_PARTITION")
PACKAGES = ("torch", "numpy", "pandas", "scipy", "medpy", "pyyaml", "submitit", "nibabel")


def git_state(root: Path) -> dict[str, Any]:
    """HEAD's SHA, the plugin files of ``root`` that git does not track (a new method not yet added), and
    whether the tree is dirty: uncommitted changes to tracked files, or an untracked plugin file, since
    either way the commit does not hold the code that ran (None outside a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    untracked = git("ls-files", "--others", "--exclude-standard", "--", *PLUGIN_FOLDERS)
    plugins = untracked.splitlines() if untracked else []
    return {"git_sha": sha, "git_dirty": None if status is None else bool(status or plugins), "git_untracked_plugins": plugins}


def file_hashes(paths: list[Path], root: Path, taken: dict[Path, str] | None = None) -> dict[str, str]:
    """SHA-256 of each file, by its path relative to ``root`` (absolute when outside it); ``taken``: digests
    already computed (plugin files as they were imported, which is the code that ran)."""
    out = {}
    for path in paths:
        digest = (taken or {}).get(path) or file_sha256(path)
        path = Path(path).resolve()
        out[str(path.relative_to(root) if path.is_relative_to(root) else path)] = digest
    return out


def versions() -> dict[str, str | None]:
    """Python's and the main packages' versions, and a SHA-256 of every installed distribution's name and
    version (``installed``): two runs whose environments differ in any package differ there. Read once per
    process (scanning every distribution costs about 0.1 s a call): what a process has imported does not change
    when a package is installed beside it, so the first reading is the environment its runs use."""
    return dict(_versions())


@cache
def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    from missbench import __version__

    out["missbench"] = __version__
    installed = sorted({f"{d.metadata['Name']}=={d.version}".lower() for d in metadata.distributions()})
    out["installed"] = f"{len(installed)} distributions, sha256 {hashlib.sha256(chr(10).join(installed).encode()).hexdigest()[:16]}"
    return out


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what the platform says."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def device_info(device: torch.device) -> dict[str, Any]:
    """The device and the host: CPU floats depend on the instruction set torch dispatches to (AVX2 or
    AVX-512 kernels sum in other orders), so a CPU run records it beside the model."""
    info: dict[str, Any] = {"device": str(device), "host": socket.gethostname(), "platform": platform.platform(),
                            "torch_threads": torch.get_num_threads(), "cpu": cpu_model(), "cpu_cores": os.cpu_count(),
                            "cores_available": available_cores(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    info["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else info["cpu"]
    return info


def peak_memory_mib(device: torch.device) -> dict[str, float]:
    """Peak memory: CUDA max allocated on a GPU; on CPU the process's peak RSS, labelled as such."""
    if device.type == "cuda":
        return {"peak_cuda_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_process_rss_mib": rss / (2**20 if sys.platform == "darwin" else 2**10)}


def scheduler_info() -> dict[str, Any]:
    """Which executor ran this process (inline, local, slurm) and, under SLURM, the job and array ids."""
    env = os.environ
    return {"executor": env.get("SUBMITIT_EXECUTOR", "inline"),
            "slurm": {key.lower(): env[key] for key in SLURM_VARS if key in env} or None}
