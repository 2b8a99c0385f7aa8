"""The tree checks itself: every module path, file name, dotted module name and ``bench.py`` command that code,
docs, captions and protocol files mention exists, and run states are spelled once (missbench/store/state.py)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path


from conftest import bench_here
from missbench.store.state import State

ROOT = Path(__file__).resolve().parent.parent
#: Files a reader writes when following the docs (the README's plugin example, docs/nets.md's example method,
#: a root's own settings file), so absent from the tree by design.
READER_FILES = {"methods/late_fusion.py", "tests/test_late_fusion.py", "protocols/mine.yaml", "methods/fill_unet.py",
                "missbench.yaml"}
#: Paths inside other repositories, named beside their repository.
EXTERNAL = {"docs/glossary.md",  # BrainLesion/BraTS, in datasets/brats2018.py
            "datasets/BraTS/brats_split/Brats2018_imb_split_mr1379.csv"}  # PASSION, in protocols/passion_rates.yaml
PATH = re.compile(r"(?<![\w/.-])((?:missbench|methods|datasets|protocols|docs|scripts|benchmarks|analysis|configs|tests|\.ci)"
                  r"/[\w./-]*\w)")
DOTTED = re.compile(r"(?<![\w./-])(missbench(?:\.\w+)+)")
COMMAND = re.compile(r"bench\.py((?: (?:[\w,./=-]+|'[^']*'|\"[^\"]*\"))*)")
SUFFIXES = (".py", ".md", ".yaml", ".yml", ".txt", ".sh", ".toml", ".cfg")


def tracked_text() -> dict[str, str]:
    """Every tracked text file but the tests (they write throwaway files) and their data."""
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return {n: (ROOT / n).read_text(errors="replace") for n in names
            if (n.endswith(SUFFIXES) or n == ".ci/run") and not n.startswith("tests/") and (ROOT / n).is_file()}


def exists(path: str) -> bool:
    """A file or folder of the tree; a name ending in ``_`` is a prefix (``tests/test_``)."""
    if path.endswith("_"):
        return any(p.name.startswith(Path(path).name) for p in (ROOT / path).parent.glob("*"))
    return (ROOT / path).exists()


def resolves(name: str) -> bool:
    """Whether ``missbench.a.b`` is a module, or an attribute of the longest module prefix."""
    parts = name.split(".")
    for i in range(len(parts), 1, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_path_and_module_the_tree_names_exists():
    stale = []
    for name, text in tracked_text().items():
        for m in PATH.finditer(text):
            path = m.group(1).rstrip(".")
            if path not in READER_FILES | EXTERNAL and not exists(path):
                stale.append(f"{name}: {path}")
        for m in DOTTED.finditer(text):
            dotted = m.group(1)
            if dotted.endswith(SUFFIXES) or dotted in READER_FILES or dotted.startswith("missbench.plugins"):
                continue
            if not resolves(dotted):
                stale.append(f"{name}: {dotted}")
    assert not stale, "stale references:\n" + "\n".join(sorted(set(stale)))


def options_of(argv: list[str]) -> set[str]:
    """The long options ``bench.py <argv> --help`` lists."""
    shown = bench_here(*argv, "--help")
    assert shown.returncode == 0, shown.stderr
    return set(re.findall(r"--[\w-]+", shown.stdout))


def test_every_bench_py_command_the_docs_show_exists():
    subcommands = ("list", "check", "prepare", "export", "evaluate", "status", "collect", "cancel")
    options = {sub: options_of([sub]) for sub in subcommands} | {"": options_of([])}
    wrong = []
    for name, text in tracked_text().items():
        for m in COMMAND.finditer(text):
            words = m.group(1).split()
            sub = words[0] if words and not words[0].startswith("-") else ""
            if sub and sub not in subcommands:
                if re.fullmatch(r"[a-z]+", sub) and name.endswith((".md", ".sh")) or name == ".ci/run":
                    wrong.append(f"{name}: bench.py {sub} (no such subcommand)")
                continue
            for word in words:
                flag = word.split("=", 1)[0]
                if flag.startswith("--") and flag not in options[sub]:
                    wrong.append(f"{name}: bench.py {sub} {flag} (no such option)".replace("  ", " "))
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_make_tables_options_the_docs_show_exist():
    help_text = subprocess.run([sys.executable, str(ROOT / "analysis" / "make_tables.py"), "--help"], capture_output=True,
                               text=True, check=True).stdout
    known = set(re.findall(r"--[\w-]+", help_text))
    used = {(name, flag) for name, text in tracked_text().items()
            for m in re.finditer(r"make_tables\.py((?: +[\w,./=-]+)*)", text) for flag in re.findall(r"--[\w-]+", m.group(1))}
    assert not {f"{n}: {f}" for n, f in used if f not in known}


def test_run_states_are_spelled_once():
    """A state compared or built as a bare string outside missbench/store/state.py would drift from `State`."""
    names = "|".join(s.value for s in State)
    literal = re.compile(rf"(?:[=!]=|\bis\b|\bin\b\s*\(?|RunState\([^)]*,)\s*[\"']({names})[\"']|[\"']({names})[\"']\s*:\s")
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
             for p in sorted((ROOT / "missbench").rglob("*.py")) if p.name != "state.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if literal.search(line)]
    assert not found, "bare run-state strings:\n" + "\n".join(found)
