"""README.md's "Adding a method" is a worked example that runs: its method file is copied into a fresh
benchmark root, each `python bench.py` line of the section runs there and succeeds, and its example
test passes."""

from __future__ import annotations

import re
import shlex

from conftest import CHECKOUT, make_root
from missbench.cli import main
from missbench.core.tasks import get_task
from missbench.store.run_folder import load_rows

SECTION = re.search(r"^## Adding a method\n.*?(?=^## |\Z)", (CHECKOUT / "README.md").read_text(), re.S | re.M).group(0)


def blocks(language: str) -> list[str]:
    """The section's fenced code blocks in ``language``."""
    return re.findall(rf"```{language}\n(.*?)```", SECTION, re.S)


def block(first_line: str) -> str:
    """The Python block that starts with ``first_line``."""
    return next(b for b in blocks("python") if b.startswith(first_line + "\n"))


def commands() -> list[list[str]]:
    """Each ``python bench.py ...`` line of the section's bash blocks, as bench.py's arguments."""
    lines = [line.split("#")[0] for b in blocks("bash") for line in b.splitlines() if line.startswith("python bench.py ")]
    return [shlex.split(line)[2:] for line in lines]


def test_the_worked_example_passes_check_and_runs_both_tasks(tmp_path, monkeypatch, capsys):
    root = make_root(tmp_path / "root", {"late_fusion.py": block("# methods/late_fusion.py")})
    monkeypatch.setenv("MISSBENCH_ROOT", str(root))
    runs = commands()
    assert [args[0] for args in runs] == ["check", "--methods", "--protocol"]
    for args in runs:  # as written; runs with one thread, as every test here
        assert main(args if args[0] == "check" else [*args, "--threads", "1", "--no-progress"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "15 passed, 0 failed" in out
    assert set(load_rows(root / "results" / "non_dedicated_brats_synthetic_smoke").method) == {"late_fusion"}
    assert set(load_rows(root / "results" / "audio_rate_avmnist_synthetic_smoke").method) == {"late_fusion"}


def test_the_example_test_passes(tmp_path, monkeypatch):
    monkeypatch.setenv("MISSBENCH_ROOT", str(make_root(tmp_path / "root", {"late_fusion.py": block("# methods/late_fusion.py")})))
    namespace: dict = {}
    exec(compile(block("# tests/test_late_fusion.py"), "README.md", "exec"), namespace)
    tests = [f for name, f in namespace.items() if name.startswith("test_")]
    assert len(tests) == 1
    tests[0](get_task("segmentation"))


def test_the_readme_names_every_test_helper_it_shows():
    import conftest
    from missbench import testing

    named = set(re.findall(r"`(\w+)\(", SECTION))
    helpers = {"assert_every_pattern_ignores_missing", "assert_classification_ignores_missing", "assert_shared_encoding_matches",
               "toy_losses", "classification_toy_losses", "tiny_batch", "tiny_classification_batch", "classification_task"}
    assert helpers | {"make_root"} <= named and set(testing.__all__) == helpers | {"MODS"}
    assert all(callable(getattr(testing, h)) for h in helpers) and callable(conftest.make_root)
