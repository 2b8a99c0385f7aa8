"""Shared fixtures: the data set's modalities, the segmentation task, tiny inputs.

The tests use the checkout they live in: pyproject.toml puts it first on sys.path (``pythonpath``),
so ``missbench`` is imported from here even when an editable install points at another checkout,
and this file pins the benchmark root to it (``$MISSBENCH_ROOT``, which subprocesses inherit), so
plugins and protocols come from here wherever pytest is started.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The checkout these tests belong to.
CHECKOUT = Path(__file__).resolve().parent.parent
os.environ["MISSBENCH_ROOT"] = str(CHECKOUT)

import pytest  # noqa: E402
import torch  # noqa: E402

from missbench.core.tasks import get_task  # noqa: E402
from missbench.testing import (  # noqa: E402, F401 - the helpers a method's tests use, from the installed package
    MODS, assert_classification_ignores_missing, assert_every_pattern_ignores_missing, assert_shared_encoding_matches,
    classification_task, classification_toy_losses, tiny_batch, tiny_classification_batch, toy_losses)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true",
                     help="also run the tests marked slow (opt-in: .ci/run runs them as a step of their own)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests marked slow are skipped, with the reason, unless ``--slow`` asks for them: the README's test
    command stays a few minutes of CPU while CI still runs every check."""
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="marked slow (opt-in): python -m pytest --slow runs it, as .ci/run does")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture
def default_flags():
    """Put the process-wide backend flags (TF32, cuDNN, determinism) back to the default execution's after a
    test whose run sets others."""
    yield
    from missbench.core.execution import Execution

    Execution().configure()


@pytest.fixture
def task():
    return get_task("segmentation")


def bench_here(*args: str):
    """``bench.py ARGS`` run by this process's main, as a subprocess.CompletedProcess (exit status, stdout, stderr):
    a command without the second or so a fresh process spends importing torch. The root is chosen afresh as in a
    new process (``--root``, $MISSBENCH_ROOT, the working folder); main does not keep it. A plugin file is imported
    once per process, so a command that must see an edited plugin runs in a fresh process instead."""
    import contextlib
    import io
    import subprocess

    from missbench.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's usage errors
            code = e.code
    return subprocess.CompletedProcess(["bench.py", *args], code, out.getvalue(), err.getvalue())


def make_root(folder: Path, methods: dict[str, str]) -> Path:
    """A benchmark root at ``folder`` whose methods/ holds ``methods`` (file name -> source) and whose
    datasets/ and protocols/ are copies of this checkout's."""
    import shutil

    (folder / "methods").mkdir(parents=True)
    for name, text in methods.items():
        (folder / "methods" / name).write_text(text)
    shutil.copytree(CHECKOUT / "datasets", folder / "datasets", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(CHECKOUT / "protocols", folder / "protocols")
    return folder


def smoke_spec(method: str):
    """The non-dedicated protocol's request for ``method`` at the smoke budget (4 iterations, checkpoint every 2), on one
    CPU thread: the request `bench.py --methods METHOD --budget smoke --threads 1` makes."""
    from missbench.experiment import registry
    from missbench.experiment.protocol import load_protocol

    proto = load_protocol(registry.protocol_path("non_dedicated"))
    return proto.expand([method], registry.dataset_class("brats_synthetic"), {}, "smoke")[0].on_cpu_threads(1)


def run_killed_then_resumed(spec, tmp_path, monkeypatch, exe=None, checkpoint: int = 2):
    """Run ``spec`` uninterrupted into tmp_path/a; into tmp_path/b, kill it after the checkpoint at
    iteration ``checkpoint`` (checking what the kill left), then rerun it. Returns the two model folders.

    The kill comes at the start of iteration ``checkpoint``, once its batch is drawn: with prefetching (the
    default ``exe`` here, though not a CPU run's), the generators are a batch further on by then, and already were when the checkpoint
    was written, which must record them as they were before that batch."""
    from missbench.core.execution import Execution
    from missbench.engine.run import run

    exe = exe or Execution(progress=False, prefetch=True)
    assert run(spec, tmp_path / "a", exe).startswith("done")
    killed = killed_at(spec, tmp_path / "b", monkeypatch, exe, checkpoint)
    assert (killed / "checkpoint.pt").exists() and not (killed / "DONE").exists()
    assert torch.load(killed / "checkpoint.pt", weights_only=False)["step"] == checkpoint
    assert run(spec, tmp_path / "b", exe).startswith("done")
    return tmp_path / "a" / spec.model.model_id, killed


def killed_at(spec, sweep, monkeypatch, exe, step: int):
    """Run ``spec`` into ``sweep`` and kill it (KeyboardInterrupt) at the start of iteration ``step``; its model folder."""
    import pytest

    from missbench.core.method import Method
    from missbench.engine.run import run

    original = Method.set_step

    def dying(self, at, total):
        if at == step:
            raise KeyboardInterrupt
        return original(self, at, total)

    monkeypatch.setattr(Method, "set_step", dying)
    with pytest.raises(KeyboardInterrupt):
        run(spec, sweep, exe)
    monkeypatch.setattr(Method, "set_step", original)
    return sweep / spec.model.model_id


def assert_protocol_error(tmp_path, text: str, message: str) -> None:
    """Loading a protocol file holding ``text`` fails with ``message`` and names the file."""
    import re

    from missbench.experiment.protocol import ProtocolError, load_protocol

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProtocolError, match=re.escape(message)) as err:
        load_protocol(path)
    assert str(path) in str(err.value)


def direct_poe(mu, var, kept):
    """mu = Σ mu_i/var_i / (1 + Σ 1/var_i), var = 1 / (1 + Σ 1/var_i) over the kept experts and the N(0, 1) prior."""
    precision = 1 + sum(1 / var[i] for i in kept)
    return sum(mu[i] / var[i] for i in kept) / precision, 1 / precision


#: ShaSpec's segmentation training, written out from its paper and code rather than read from missbench (Wang et al.,
#: CVPR 2023, Sec. 4.2; github.com/billhhh/ShaSpec at 081fe7a, run.sh and train_SS.py): SGD with Nesterov momentum 0.99,
#: lr 1e-2, no weight decay, no AMSGrad (Adam only), cosine schedule (the paper), kept-modality count uniform in 1..M
#: then a subset, a full-modality warm-up of 80k of 180k iterations, ShaSpec's patch pipeline.
SHASPEC_SEGMENTATION_TRAINING = {"optimizer": "sgd", "lr": 1e-2, "momentum": 0.99, "nesterov": True, "weight_decay": 0.0,
                                 "amsgrad": False, "schedule": "cosine", "dropout": "count_then_subset",
                                 "warmup_fraction": 80 / 180, "sampler": "shaspec"}


def assert_shaspec_segmentation_training(cfg) -> None:
    """``cfg`` (a method's training on segmentation) is ShaSpec's, setting by setting (the step schedule's two
    settings aside: the cosine schedule reads neither)."""
    got = {k: getattr(cfg, k) for k in SHASPEC_SEGMENTATION_TRAINING}
    assert got == SHASPEC_SEGMENTATION_TRAINING, got


#: Packages a GPU host may lack (submitit: the local and SLURM executors; nibabel: NIfTI files; medpy: the
#: reference scoring path), which the run path must not need.
OPTIONAL_PACKAGES = ("submitit", "nibabel", "medpy")


def without_optional_packages(code: str, *args: str, timeout: float = 600):
    """Run Python ``code`` with ``args`` in a subprocess (the repository root first on sys.path) where importing
    any of `OPTIONAL_PACKAGES` fails; ``attempted`` (a list in the code's namespace) names each import tried."""
    import subprocess
    import sys

    prelude = f"""
import importlib.abc, sys
attempted = []
class _Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {OPTIONAL_PACKAGES!r}:
            attempted.append(name)
            raise ImportError(f"No module named {{name!r}} (not installed on this host)")
sys.meta_path.insert(0, _Missing())
"""
    return subprocess.run([sys.executable, "-c", prelude + code, *args], cwd=CHECKOUT,
                          capture_output=True, text=True, timeout=timeout)
