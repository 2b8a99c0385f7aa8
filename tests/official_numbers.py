"""What scripts/official_parity.py and tests/test_official_parity.py share: seeded weights keyed by the official
code's parameter names, seeded inputs, and the summary an output is recorded and compared by.

Weights are a function of (seed, parameter name, shape) alone, so the test rebuilds the very state dict the
official model ran with from the names and shapes the script recorded, without the official code: a tensor
of rank >= 2 is N(0, 1 / fan_in) (fan_in = the product of its trailing dimensions); a rank <= 1 ``weight``
(a norm's scale) 1 + 0.1 N(0, 1); any other rank <= 1 tensor (a bias, a norm's shift) 0.1 N(0, 1); a norm's
``running_mean`` 0.1 N(0, 1), ``running_var`` U(0.5, 1.5); ``num_batches_tracked`` 0. Values come from numpy's
PCG64 generator seeded with (seed, CRC-32 of the name), in float64, cast to the dtype asked for.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: The recorded numbers of the official code (scripts/official_parity.py writes them).
DATA = Path(__file__).parent / "data" / "official_parity.json"
#: The data set's modality order, and one availability pattern per sample in it (FLAIR, T1, T1c, T2).
DATA_ORDER = ("FLAIR", "T1", "T1c", "T2")
AVAILABLE = ((1, 1, 1, 1), (1, 0, 1, 0), (0, 1, 0, 0), (0, 0, 1, 1))
#: Values of an output recorded besides its sums, at seeded flat positions.
PROBES = 32


def generator(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def seeded_tensor(name: str, shape: list[int] | tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The weight ``name`` of ``shape`` (module docstring)."""
    shape = tuple(int(s) for s in shape)
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.long)
    rng = generator(seed, name)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        values = 0.5 + rng.random(shape)
    elif leaf == "running_mean":
        values = 0.1 * rng.standard_normal(shape)
    elif len(shape) <= 1:
        values = (1.0 if leaf == "weight" else 0.0) + 0.1 * rng.standard_normal(shape)
    else:
        values = rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))
    return torch.from_numpy(values).to(dtype)


def seeded_state(shapes: dict[str, list[int]], seed: int, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Every tensor of a state dict, by name and shape."""
    return {name: seeded_tensor(name, shape, seed, dtype) for name, shape in shapes.items()}


def seeded_input(name: str, shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Standard normal input values."""
    return torch.from_numpy(generator(seed, "input:" + name).standard_normal(shape)).to(dtype)


def seeded_labels(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A BraTS label map in {0, 1, 2, 4} (background 55%, each tumour label 15%)."""
    return torch.from_numpy(generator(seed, "labels:" + name).choice([0, 1, 2, 4], size=shape, p=[0.55, 0.15, 0.15, 0.15]))


def zeroed(x: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """``x`` (B x M x ...) with the modalities a sample lacks set to 0, as the harness hands inputs to a method."""
    return x * available.to(x.dtype).view(*available.shape, *([1] * (x.ndim - 2)))


def brain_case(size: tuple[int, ...], seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The segmentation parity case: inputs in the data set's order with the missing modalities zeroed (B x 4 x
    size), availability (one sample per pattern of `AVAILABLE`) and a label map."""
    available = torch.tensor(AVAILABLE, dtype=torch.bool)
    x = zeroed(seeded_input("brain", (len(AVAILABLE), 4, *size), seed, dtype), available)
    return x, available, seeded_labels("brain", (len(AVAILABLE), *size), seed)


def summary(t: torch.Tensor, name: str) -> dict[str, Any]:
    """Shape, sums and ``PROBES`` values at positions drawn from (name) of one output."""
    flat = t.detach().double().flatten()
    positions = generator(0, "probe:" + name).integers(flat.numel(), size=min(PROBES, flat.numel()))
    return {"shape": list(t.shape), "sum": flat.sum().item(), "abs_sum": flat.abs().sum().item(),
            "sq_sum": flat.pow(2).sum().item(), "probes": flat[torch.from_numpy(positions)].tolist()}


def load() -> dict[str, Any]:
    return json.loads(DATA.read_text())


def assert_summary_close(got: dict[str, Any], expected: dict[str, Any], what: str, rtol: float, atol: float) -> None:
    assert got["shape"] == expected["shape"], f"{what}: shape {got['shape']} != {expected['shape']}"
    values = ["sum", "abs_sum", "sq_sum"]
    a = torch.tensor([*(got[v] for v in values), *got["probes"]], dtype=torch.float64)
    b = torch.tensor([*(expected[v] for v in values), *expected["probes"]], dtype=torch.float64)
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def max_difference(got: dict[str, Any], expected: dict[str, Any]) -> float:
    """Largest absolute difference among the probes (what the report quotes)."""
    return max(abs(x - y) for x, y in zip(got["probes"], expected["probes"]))
