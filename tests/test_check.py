"""``bench.py check NAME``: every shipped method passes the contract on toy data, and each check catches
the break it is there for, with its fix hint and exit status 1."""

from __future__ import annotations

import pytest

from conftest import make_root
from missbench.cli import main
from missbench.engine.contract import CHECKS, HINTS
from missbench.experiment import registry

#: Small widths for a fast check (the sizes of each method's own tests); a method not listed runs at its defaults.
SMALL = {
    "hemis": {"width": 4, "depth": 2},
    "mean_fill": {"width": 4, "depth": 2, "dim": 16},
    "mmformer": {"width": 4, "dim": 16, "mlp_dim": 32, "heads": 2},
    "rfnet": {"width": 4},
    "shaspec": {"width": 4, "depth": 2, "dim": 16},
    "smil": {"width": 4, "depth": 2},
    "uhved": {"width": 4, "depth": 2},
    "ul4m4": {"width": 4, "depth": 2, "k": 4, "head_width": 16},
    "zero_fill": {"width": 4, "depth": 2},
    "gss": {"width": 4},
    "m2ftrans": {"width": 2, "mlp_dim": 32, "heads": 2, "expand": 2},
    "demoseg": {"width": 8, "max_width": 32, "pools": 3},
}

#: A late-fusion segmentation method that keeps the contract; the broken variants below change one line each.
GOOD = '''
import numpy as np
import torch
from torch import nn

from missbench.core.method import Method, Output


class Toy(Method):
    name = "toy"
    own_task_loss = True  # it adds the task loss itself (most methods let the engine add it)

    def __init__(self, task, modalities, **params):
        super().__init__(task, modalities, **params)
        self.heads = nn.ModuleList(nn.Conv3d(1, task.out_channels(self.output), 3, padding=1) for _ in modalities)
        self.register_buffer("offset", torch.zeros(()))

    def encode(self, x):
        return [head(x[:, i : i + 1]) for i, head in enumerate(self.heads)]

    def decode(self, features, available, target=None):
        w = available.float().view(*available.shape, 1, 1, 1, 1)
        logits = (torch.stack(features, 1) * w).sum(1) / w.sum(1) + self.offset
        out = Output(logits)
        if target is not None:
            out.losses.update(self.task_loss(logits, target))
            self.offset -= 0.01  # a running statistic: what a checkpoint must carry
        return out
'''
BROKEN = {
    "losses": ("            out.losses.update(self.task_loss(logits, target))\n", ""),
    "ignores missing": ("return [head(x[:, i : i + 1])", "return [head(x.sum(1, keepdim=True))"),
    "same seed": ('self.register_buffer("offset", torch.zeros(()))', 'self.register_buffer("offset", torch.tensor(np.random.rand()))'),
    "checkpoint": ('self.register_buffer("offset", torch.zeros(()))', 'self.offset = torch.zeros(())'),
    "patterns": ("out = Output(logits)", "out = Output(logits[:, :2])"),
    "declaration": ('    own_task_loss = True', '    outputs = {"segmentation": "probabilities"}\n    own_task_loss = True'),
}


def results(out: str) -> dict[tuple[str, str], str]:
    """(task, check) -> pass | FAIL | n/a, from the table `bench.py check` prints."""
    rows = {}
    for line in out.splitlines():
        for check in CHECKS:
            task, sep, rest = line.partition(f" {check} ")
            if sep and task.strip() in ("-", "segmentation", "classification"):
                rows[task.strip(), check] = rest.split()[0]
    return rows


@pytest.mark.parametrize("method", registry.method_names())
def test_every_shipped_method_passes_the_contract(method, capsys):
    params = [f"--param={k}={v}" for k, v in SMALL.get(method, {}).items()]
    assert main(["check", method, *params]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    checks = results(out)
    assert set(checks.values()) <= {"pass", "n/a"} and "0 failed" in out
    assert {task for task, _ in checks} - {"-"} == set(registry.method_class(method).tasks)
    assert len(checks) == 1 + 7 * len(registry.method_class(method).tasks)


def test_a_method_that_keeps_the_contract_passes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MISSBENCH_ROOT", str(make_root(tmp_path / "root", {"toy.py": GOOD})))
    assert main(["check", "toy"]) == 0
    assert set(results(capsys.readouterr().out).values()) == {"pass"}


@pytest.mark.parametrize("check", [c for c in BROKEN if c != "declaration"])
def test_each_check_catches_its_break_with_the_fix(check, tmp_path, monkeypatch, capsys):
    old, new = BROKEN[check]
    assert GOOD.count(old) == 1
    monkeypatch.setenv("MISSBENCH_ROOT", str(make_root(tmp_path / "root", {"toy.py": GOOD.replace(old, new)})))
    assert main(["check", "toy"]) == 1
    out = capsys.readouterr().out
    failed = {c for (_, c), result in results(out).items() if result == "FAIL"}
    assert check in failed and f"fix: {HINTS[check]}" in out
    if check == "losses":
        assert "returned no loss terms in training" in out


def test_a_broken_declaration_is_refused_when_the_plugin_loads(tmp_path, monkeypatch, capsys):
    """A class whose declaration the engine cannot read never registers: `check` (and every command) names the
    file and the problem in one line, exit status 2; `bench.py list` shows it among the broken plugins."""
    old, new = BROKEN["declaration"]
    monkeypatch.setenv("MISSBENCH_ROOT", str(make_root(tmp_path / "root", {"toy.py": GOOD.replace(old, new)})))
    assert main(["check", "toy"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not load: methods/toy.py (TypeError: method class Toy: outputs['segmentation'] is " \
        "'probabilities'" in err
    assert main(["list", "--methods"]) == 0
    assert "broken: methods/toy.py: TypeError: method class Toy: outputs['segmentation']" in capsys.readouterr().out


def test_bad_parameters_get_one_line_and_exit_2(capsys):
    assert main(["check", "shaspec", "--param", "width=wide"]) == 2
    err = capsys.readouterr().err
    assert "width='wide'" in err and err.count("\n") == 1


def test_a_loss_term_that_is_not_a_scalar_is_refused_by_name(tmp_path, monkeypatch, capsys):
    """train_step checks the terms before summing them: a vector term used to fail as "Boolean value of Tensor
    with more than one value is ambiguous", in `bench.py check` and in a run alike."""
    old = "            out.losses.update(self.task_loss(logits, target))\n"
    new = old + '            out.losses["spread"] = logits.flatten(1).std(1)\n'
    monkeypatch.setenv("MISSBENCH_ROOT", str(make_root(tmp_path / "root", {"toy.py": GOOD.replace(old, new)})))
    assert main(["check", "toy"]) == 1
    out = capsys.readouterr().out
    assert results(out)["segmentation", "losses"] == "FAIL" and "loss term 'spread' is not a named scalar tensor" in out
    assert main(["--methods", "toy", "--budget", "smoke", "--no-progress", "--threads", "1", "--out", str(tmp_path / "s")]) == 1
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("[1/1] "))
    assert "FAILED, MethodError: method 'toy': loss term 'spread' is not a named scalar tensor" in line


def test_a_method_without_loss_terms_fails_its_run_with_one_line(tmp_path, monkeypatch, capsys):
    """At run time train_step refuses it (MethodError), the run records FAILED and the user reads one line."""
    old, new = BROKEN["losses"]
    monkeypatch.setenv("MISSBENCH_ROOT", str(make_root(tmp_path / "root", {"toy.py": GOOD.replace(old, new)})))
    sweep = tmp_path / "sweep"
    assert main(["--methods", "toy", "--budget", "smoke", "--no-progress", "--threads", "1", "--out", str(sweep)]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("[1/1] "))
    assert "FAILED, MethodError: method 'toy' returned no loss terms in training; with own_task_loss = True it adds its task loss itself" in line
    assert "TypeError" not in out and "Traceback" not in out
    assert "MethodError" in next(sweep.glob("toy_*/FAILED")).read_text()
