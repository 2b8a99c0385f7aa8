"""Regression pins: each method's outputs and loss terms on a fixed small input with seeded weights, as this
project computed them when they were recorded.

These numbers are the project's own, not the official code's: they catch a refactor that moves any method's
numbers (every method and task, the default options), not a deviation from the paper's code. That is
tests/test_official_parity.py's job, against numbers the official code itself computed
(scripts/official_parity.py). A deliberate change to a method (a fidelity fix) regenerates its entries here
with ``python tests/test_parity.py --write`` and says why in the commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

# Run as a script (--write): this checkout's package and conftest (which pins the root to this checkout),
# as under pytest, whichever checkout an editable install points at.
sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
from conftest import MODS, classification_task, tiny_batch, tiny_classification_batch  # noqa: E402
from missbench.experiment import registry  # noqa: E402
from missbench.core.availability import zero_inputs  # noqa: E402
from missbench.core.tasks import get_task  # noqa: E402

EXPECTED = Path(__file__).parent / "data" / "parity.json"
#: Flat indices of the logits whose values are pinned besides the sums.
PROBES = 8


def cases() -> list[tuple[str, str]]:
    return [(m, t) for m in registry.method_names() for t in ("segmentation", "classification")
            if t in registry.method_class(m).tasks]


def measure(method: str, task_name: str) -> dict:
    """Seeded weights, a fixed input with a mixed availability per sample, train mode: at step 1 of 4
    ("early"), then with every stage of the method fit on that batch, at step 3 of 4 ("late")."""
    cls = registry.method_class(method)
    if task_name == "segmentation":
        task = get_task("segmentation")
        x, y = tiny_batch(batch=3, size=16)
        mods = MODS
        available = torch.tensor([[True, False, True, True], [False, True, False, False], [True] * 4])
    else:
        task = classification_task(("image", "audio"), n_classes=4)
        x, y = tiny_classification_batch(task, batch=4)
        mods = tuple(task.inputs)
        available = torch.tensor([[True, True], [True, False], [False, True], [True, True]])
    torch.manual_seed(0)
    model = cls(task, mods)
    zeroed = zero_inputs(x, available)

    def forward(step: int) -> dict:
        model.train()
        model.set_step(step, 4)
        torch.manual_seed(step)
        out = model.training_output(zeroed, available, y)
        logits = out.logits.detach().double().flatten()
        every = max(1, logits.numel() // PROBES)
        return {"logits_sum": logits.sum().item(), "logits_abs_sum": logits.abs().sum().item(),
                "logits_probe": logits[::every][:PROBES].tolist(),
                "losses": {k: v.item() for k, v in sorted(out.losses.items())}}

    early = forward(1)
    model.eval()
    with torch.no_grad():
        for index, _ in enumerate(model.stage_steps(4)):
            model.fit_stage(index, lambda: iter([(zeroed, available, y)]))
    return {"early": early, "late": forward(3)}


@pytest.mark.parametrize("method,task_name", cases())
def test_method_numbers_are_unchanged(method, task_name):
    torch.set_num_threads(1)
    expected = json.loads(EXPECTED.read_text())[f"{method}/{task_name}"]
    got = measure(method, task_name)
    for phase in ("early", "late"):
        g, e = got[phase], expected[phase]
        assert sorted(g["losses"]) == sorted(e["losses"]), phase
        flat = lambda d: [d["logits_sum"], d["logits_abs_sum"], *d["logits_probe"], *d["losses"].values()]  # noqa: E731
        torch.testing.assert_close(torch.tensor(flat(g)), torch.tensor(flat(e)), rtol=1e-4, atol=1e-5, msg=lambda m: f"{phase}: {m}")


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    torch.set_num_threads(1)
    EXPECTED.write_text(json.dumps({f"{m}/{t}": measure(m, t) for m, t in cases()}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {EXPECTED}")
