"""The benchmark root (missbench/experiment/root.py): --root, then $MISSBENCH_ROOT, then the folder one
stands in, then the package's checkout; pytest and bench.py in any checkout use that checkout; jobs
inherit the root of the process that starts them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CHECKOUT, bench_here, make_root
from missbench.executors.environment import importable
from missbench.experiment import root as benchmark_root
from missbench.experiment.root import RootError, root, use_root

SMOKE = ["--protocol", "non_dedicated", "--budget", "smoke", "--no-progress", "--threads", "1"]


def my_root(folder: Path) -> Path:
    """A benchmark root whose only method is ``my_fill`` (zero_fill under another name)."""
    text = (CHECKOUT / "methods" / "zero_fill.py").read_text().replace('name = "zero_fill"', 'name = "my_fill"')
    return make_root(folder, {"my_fill.py": text})


@pytest.fixture
def bench(monkeypatch):
    """``bench(*args, cwd=folder)``: bench.py as started in ``folder`` with no root in the environment (run by this
    process's main, which chooses the root afresh for each command, as a new process would)."""
    def started_in(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        monkeypatch.delenv(benchmark_root.ENV, raising=False)
        return bench_here(*args)

    return started_in


def test_pytest_in_another_checkout_imports_and_uses_that_checkout(tmp_path):
    """A second checkout's tests import its own missbench and plugins, not the editable install's (this checkout):
    pyproject's pythonpath and conftest's root pin. Without either, the copy's probe sees this checkout."""
    other = tmp_path / "other"
    for name in ("missbench", "methods", "datasets", "protocols"):
        shutil.copytree(CHECKOUT / name, other / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CHECKOUT / "pyproject.toml", other)
    (other / "tests").mkdir()
    shutil.copy(CHECKOUT / "tests" / "conftest.py", other / "tests")
    (other / "tests" / "test_probe.py").write_text(
        "import json, missbench\nfrom missbench.experiment.root import root\n\n\ndef test_probe():\n"
        "    print('PROBE', json.dumps([missbench.__file__, str(root())]))\n")
    env = {k: v for k, v in os.environ.items() if k not in (benchmark_root.ENV, "PYTHONPATH")}
    # started in its tests/ folder, so that the checkout is on sys.path only by pyproject's pythonpath
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_probe.py"],
                         cwd=other / "tests", env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    module, used_root = json.loads(next(line for line in out.stdout.splitlines() if "PROBE" in line).split("PROBE ", 1)[1])
    assert Path(module).resolve() == (other / "missbench" / "__init__.py").resolve()
    assert Path(used_root).resolve() == other.resolve() != CHECKOUT


def test_the_root_is_chosen_by_flag_then_environment_then_folder_then_checkout(tmp_path, monkeypatch):
    here, there, plain = my_root(tmp_path / "here"), my_root(tmp_path / "there"), tmp_path / "plain"
    (plain / "datasets").mkdir(parents=True)  # a data folder: not a root
    monkeypatch.delenv(benchmark_root.ENV)
    monkeypatch.chdir(here)
    assert root() == here
    monkeypatch.chdir(plain)
    assert root() == benchmark_root.PACKAGE_CHECKOUT == CHECKOUT
    monkeypatch.setenv(benchmark_root.ENV, str(there))
    assert root() == there
    try:
        use_root(here)
        assert root() == here
    finally:
        use_root(None)
    assert root() == there
    with pytest.raises(RootError, match=r"--root .*plain is not a benchmark root: it holds neither methods/ nor protocols/"):
        use_root(plain)
    monkeypatch.setenv(benchmark_root.ENV, str(plain))
    with pytest.raises(RootError, match=r"\$MISSBENCH_ROOT .*plain is not a benchmark root"):
        root()


def test_bench_uses_the_plugins_and_results_of_the_folder_it_stands_in(tmp_path, bench):
    mine = my_root(tmp_path / "mine")
    listing = bench("list", "--methods", cwd=mine)
    assert listing.returncode == 0, listing.stderr
    assert "  my_fill      root" in listing.stdout and "  shaspec      shipped" in listing.stdout  # the root extends the shipped
    dry = bench(*SMOKE, "--methods", "my_fill", "--dry-run", cwd=mine)
    assert dry.returncode == 0 and f"models into {mine / 'results' / 'non_dedicated_brats_synthetic_smoke'}:" in dry.stdout
    # From a folder that is no root, the checkout holding the package is the root, unless --root says otherwise.
    elsewhere = bench("list", "--methods", cwd=tmp_path)
    assert "  shaspec      root" in elsewhere.stdout and "my_fill" not in elsewhere.stdout
    flagged = bench("list", "--methods", "--root", str(mine), cwd=tmp_path)
    assert "my_fill" in flagged.stdout and "shaspec" in flagged.stdout
    bad = bench("list", "--root", str(tmp_path), cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "is not a benchmark root" in bad.stderr


def test_a_root_holding_one_new_method_runs_it_beside_a_shipped_one_with_the_shipped_protocol(tmp_path, bench):
    """The root has only methods/my_fill.py: the shipped methods, data sets and protocols stay visible."""
    mine = tmp_path / "mine"
    (mine / "methods").mkdir(parents=True)
    (mine / "methods" / "my_fill.py").write_text((CHECKOUT / "methods" / "zero_fill.py").read_text().replace(
        'name = "zero_fill"', 'name = "my_fill"'))
    run = bench(*SMOKE, "--methods", "my_fill,shaspec", cwd=mine)
    assert run.returncode == 0, run.stdout + run.stderr
    models = sorted(p.name.split("_random")[0] for p in (mine / "results" / "non_dedicated_brats_synthetic_smoke").iterdir()
                    if p.is_dir() and not p.name.startswith("."))
    assert models == ["my_fill", "shaspec"] and "my_fill" in run.stdout and "shaspec" in run.stdout
    meta = json.loads(next((mine / "results").rglob("shaspec_*/meta.json")).read_text())
    assert meta["engine_git_sha"] is not None  # the engine's checkout, though the root is no git repository
    assert meta["git_sha"] is None and str(CHECKOUT / "methods" / "shaspec.py") in meta["plugin_files"]


def test_a_root_hides_shipped_plugins_on_purpose(tmp_path, bench):
    mine = tmp_path / "mine"
    (mine / "methods").mkdir(parents=True)
    (mine / "methods" / "my_fill.py").write_text((CHECKOUT / "methods" / "zero_fill.py").read_text().replace(
        'name = "zero_fill"', 'name = "my_fill"'))
    (mine / "missbench.yaml").write_text("hide: [shaspec, dedicated]\n")
    listing = bench("list", cwd=mine).stdout
    names = {line.split()[0] for line in listing.splitlines() if line.startswith("  ") and len(line.split()) > 1}
    assert {"my_fill", "zero_fill", "non_dedicated"} <= names and not {"shaspec", "dedicated"} & names
    assert "  zero_fill    shipped" in listing
    (mine / "missbench.yaml").write_text("shipped: false\n")
    listing = bench("list", "--methods", cwd=mine).stdout
    assert "my_fill" in listing and "zero_fill" not in listing
    (mine / "missbench.yaml").write_text("shipped: maybe\n")
    bad = bench("list", cwd=mine)
    assert bad.returncode == 2 and "missbench.yaml: shipped='maybe': expected true or false" in bad.stderr


def test_jobs_inherit_the_root_and_this_checkouts_package(tmp_path, monkeypatch):
    mine = my_root(tmp_path / "mine")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    use_root(mine)
    try:
        with importable():
            assert os.environ[benchmark_root.ENV] == str(mine)
            assert os.environ["PYTHONPATH"] == os.pathsep.join([str(CHECKOUT), "/elsewhere"])
    finally:
        use_root(None)
    assert os.environ[benchmark_root.ENV] == str(CHECKOUT) and os.environ["PYTHONPATH"] == "/elsewhere"


def test_a_local_job_finds_a_method_that_only_the_root_has(tmp_path, bench):
    """The job runs in a subprocess: it reads the method from the submitting process's root."""
    mine = my_root(tmp_path / "mine")
    run = bench(*SMOKE, "--methods", "my_fill", "--executor", "local", cwd=mine)
    assert run.returncode == 0, run.stdout + run.stderr
    meta = json.loads(next((mine / "results" / "non_dedicated_brats_synthetic_smoke").glob("my_fill_*/meta.json")).read_text())
    assert meta["executor"] == "local" and meta["method_citation"] == "reference method (no paper)"
