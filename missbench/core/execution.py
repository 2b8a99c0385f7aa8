"""How a run executes: device, memory format, precision, compilation, kernel choice, batch prefetching,
determinism, profiling.

These options change speed, not the experiment: they are recorded in meta.json but are not part of
the run id. Those that change rounding are off unless asked for: ``amp`` rounds activations to
bfloat16, ``tf32`` rounds float32 matmul and convolution inputs to 10 mantissa bits on CUDA, fused
optimisers and compilation reorder float sums. Off, float32 is IEEE float32 on every device (PyTorch
itself lets cuDNN convolutions use TF32; MissBench does not unless ``tf32``), so the fp32 default
gives the same kind of numbers on every GPU generation. Prefetching and channels-last change no number.
The phase timer behind ``--profile`` lives here too: tasks and the trainer time their phases with it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from missbench.core.params import Between, OneOf, ParamError, Rule, check_params

_NULL = contextlib.nullcontext()

#: cuBLAS's workspace setting for reproducible results (CUDA >= 10.2; the cuBLAS docs' "Results reproducibility").
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")


@dataclass(frozen=True)
class Execution:
    """Where and how a run executes (``bench.py``'s execution flags).

    One process runs one execution: `configure` sets process-wide backend flags (TF32, cuDNN,
    determinism) from it, every flag on or off, so a run never inherits an earlier run's settings.
    """

    device: str = "cpu"
    channels_last: bool = True
    progress: bool = True
    #: Sliding windows evaluated per forward pass.
    window_batch: int = 8
    #: "bf16": forward passes under bfloat16 autocast; "off": float32 throughout.
    amp: str = "off"
    #: torch.compile backend for the method's forward ("inductor", "eager", ...); None: eager PyTorch.
    compile: str | None = None
    #: Time the phases of training and evaluation into profile.json.
    profile: bool = False
    #: CUDA: float32 matmuls and convolutions on TF32 tensor cores (off: IEEE float32).
    tf32: bool = False
    #: CUDA: cuDNN times the convolution algorithms for each new input shape and keeps the fastest.
    cudnn_benchmark: bool = False
    #: The optimiser's fused kernel (Adam / SGD ``fused=True``), on devices PyTorch has one for.
    fused_optimizer: bool = False
    #: CUDA: replay the compiled forward and backward as CUDA graphs (torch.compile mode "reduce-overhead",
    #: which records one graph per input shape and runs code it cannot capture eagerly); needs compile="inductor".
    cuda_graphs: bool = False
    #: Deterministic algorithms only (torch.use_deterministic_algorithms, cuDNN deterministic and not
    #: autotuned, cuBLAS's fixed workspace): bit-identical reruns on one GPU, at some cost in speed.
    deterministic: bool = False
    #: Draw the next training batch in a background thread while the current step runs (same batches, same
    #: order). None: on a GPU, which would otherwise wait for the data; not on a CPU, where the thread takes
    #: cores from the step (ShaSpec's harness step 1.26x slower with it on 2 cores, benchmarks/train_overhead.py).
    prefetch: bool | None = None

    def __post_init__(self) -> None:
        check_params("execution", asdict(self), EXECUTION_DEFAULTS, EXECUTION_RULES)
        if self.prefetch is None:
            object.__setattr__(self, "prefetch", self.device.startswith("cuda"))  # before the device is checked
        if self.cuda_graphs and (self.compile != "inductor" or self.torch_device.type != "cuda"):
            raise ValueError("CUDA graphs replay what inductor compiled on a GPU: pass --compile (inductor) and a CUDA --device")
        if self.deterministic and self.cudnn_benchmark:
            raise ValueError("cuDNN autotuning picks algorithms by timing them, which is not deterministic: "
                             "pass --deterministic or --cudnn-benchmark, not both")

    def matches(self, recorded: dict[str, Any]) -> bool:
        """Whether ``recorded`` (a failed attempt's execution options) equals these options, progress bars aside."""
        return {k: v for k, v in asdict(self).items() if k != "progress"} == \
            {k: recorded.get(k) for k in asdict(self) if k != "progress"}

    def autocast(self) -> contextlib.AbstractContextManager:
        """The mixed-precision context for forward passes (a no-op when ``amp`` is "off")."""
        return torch.autocast(self.torch_device.type, dtype=torch.bfloat16, enabled=self.amp == "bf16")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def configure(self) -> None:
        """Set the process-wide flags this execution asks for, before the run's first kernel.

        With ``deterministic``, CUBLAS_WORKSPACE_CONFIG is set (unless set already) before the first
        cuBLAS call, which is when cuBLAS and PyTorch's determinism check read it.
        """
        if self.deterministic:
            workspace = os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC[0])
            if workspace not in CUBLAS_DETERMINISTIC:
                raise ValueError(f"--deterministic needs CUBLAS_WORKSPACE_CONFIG in {CUBLAS_DETERMINISTIC}, "
                                 f"not {workspace!r}; unset it or set one of those")
        torch.use_deterministic_algorithms(self.deterministic)
        torch.backends.cudnn.deterministic = self.deterministic
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        # The per-backend flags, not torch.set_float32_matmul_precision: that one also changes CPU matmuls.
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32

    def prepare(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """Move an input (or a list of per-modality inputs) to the device, 5-D ones in the chosen memory format."""
        if isinstance(x, list):
            return [self.prepare(t) for t in x]
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last and x.ndim == 5 else x

    def place(self, module: torch.nn.Module, volumes: bool) -> torch.nn.Module:
        """Configure the process (`configure`), move ``module`` to the device, channels-last for 3-D
        convolutions (``volumes``) when chosen, and compile it if asked."""
        self.configure()
        fmt = torch.channels_last_3d if self.channels_last and volumes else torch.contiguous_format
        module.to(self.torch_device, memory_format=fmt)
        if self.compile:
            # Methods read their iteration (`Method.set_step`) in forward; as a constant it would recompile the
            # forward at every iteration until dynamo's recompile limit, then run it eagerly. As a symbolic
            # integer it costs a recompile only where a branch on it flips (RFNet's fusion start).
            torch._dynamo.config.allow_unspec_int_on_nn_module = True
            mode = {"mode": "reduce-overhead"} if self.cuda_graphs else {}
            module.compile(backend=self.compile, **mode)  # forward only; state-dict keys stay as they are
        return module


#: Each execution option's default (its type) and allowed values; the device is checked by `check_device`.
EXECUTION_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Execution)}
EXECUTION_RULES: dict[str, Rule] = {"window_batch": Between(1, integer=True), "amp": OneOf("off", "bf16"),
                                    "prefetch": OneOf(True, False)}


def available_cores() -> int:
    """The CPU cores this process may run on: SLURM's allocation (``SLURM_CPUS_PER_TASK``) where set, else the
    process's affinity (a cgroup or taskset limit), else the machine's count. A job limited to 4 of 64 cores
    has 4."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


def set_threads(threads: int | None, share: int = 1) -> int:
    """Let torch and the BLAS/OpenMP pools numpy and scipy use (threadpoolctl) run ``threads`` CPU threads
    (default: the cores this process may use, `available_cores`, divided by ``share``, the processes that split
    them); returns the count."""
    from threadpoolctl import threadpool_limits

    count = threads or max(1, available_cores() // share)
    torch.set_num_threads(count)
    threadpool_limits(count)
    return count


def check_device(device: str, here: bool = True) -> None:
    """Refuse a device string torch does not parse and, with ``here`` (runs on this machine), a device this
    machine lacks: CUDA without a GPU or with an index past the count, MPS or another backend unavailable.
    No CUDA context is created (the count comes from the driver), so a local parent holds no GPU memory."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ParamError(f"device={device!r}: expected a torch device (cpu, cuda, cuda:N, mps)", "device",
                         f"={device!r}: expected a torch device (cpu, cuda, cuda:N, mps)") from None
    if not here or dev.type == "cpu":
        return
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        problem = ("no CUDA device is available on this machine" if not count else
                   f"this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}" if (dev.index or 0) >= count else None)
    elif dev.type == "mps":
        problem = None if torch.backends.mps.is_available() else "MPS is not available on this machine"
    else:
        backend = getattr(torch, dev.type, None)
        available = backend is not None and hasattr(backend, "is_available") and backend.is_available()
        problem = None if available else f"no {dev.type} device is available on this machine"
    if problem:
        raise ParamError(f"device={device!r}: {problem}", "device", f"={device!r}: {problem}")


class PhaseTimer:
    """Accumulates seconds and calls per named phase; ``phase(name)`` is a free no-op when disabled.

    On, each phase is timed with wall clock after a device synchronisation, so GPU work is charged
    to the phase that queued it.
    """

    def __init__(self, enabled: bool = False, device: torch.device | str = "cpu") -> None:
        self.enabled = enabled
        self.cuda = torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - t0
            self.calls[name] += 1

    def phase(self, name: str) -> contextlib.AbstractContextManager:
        return self._timed(name) if self.enabled else _NULL

    def summary(self, wall: float) -> dict[str, dict[str, float]]:
        """{phase: {seconds, calls, share}} in first-use order, share of ``wall`` seconds; "other" is the
        untimed rest (progress bar, logging, sliding-window stitching, model selection set-up)."""
        phases = dict(self.seconds) | {"other": max(wall - sum(self.seconds.values()), 0.0)}
        return {k: {"seconds": round(v, 4), "calls": self.calls.get(k, 0), "share": round(v / (wall or 1.0), 4)}
                for k, v in phases.items()}
