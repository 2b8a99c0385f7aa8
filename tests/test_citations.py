"""Every citation resolves inside the repository or to a public source: no file points at notes that live
outside it (the development workspace's ``../shared/`` folder, its ``reference/*.md`` notes).

Papers are cited by title, section, equation or table; code by repository, commit and file. This test greps
the repository's tracked text files for the names of those outside notes.
"""

import re
import subprocess

from conftest import CHECKOUT

#: Paths and note names that exist only outside the repository.
OUTSIDE = re.compile(r"\.\./shared|shared/reference|shared/data|(?<![\w-])(?:baselines|harness|shaspec|DESIGN)\.md\b"
                     r"|(?<![\w/.-])reference/\w+\.md")


def tracked_text_files() -> list:
    try:
        names = subprocess.run(["git", "-C", str(CHECKOUT), "ls-files"], capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file but the results and VCS folders
        names = [str(p.relative_to(CHECKOUT)) for p in CHECKOUT.rglob("*") if p.is_file()
                 and not {".git", "results", "__pycache__"} & set(p.relative_to(CHECKOUT).parts)]
    return names


def test_no_file_cites_notes_outside_the_repository():
    found = []
    for name in tracked_text_files():
        path = CHECKOUT / name
        if name == "tests/test_citations.py" or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary data (parquet, images)
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{name}:{number}: {line.strip()[:120]}")
    assert not found, "citations of notes outside the repository:\n" + "\n".join(found)


def test_the_pattern_finds_what_it_is_for():
    for line in ("see shared/reference/baselines.md §1", "(baselines.md §4)", "../shared/DESIGN.md", "reference/shaspec.md §6",
                 "Notes: harness.md §5.4"):
        assert OUTSIDE.search(line), line
    for line in ("the shared/specific feature plot", "missbench/realdata/brats2018_splits/README.md", "docs/methods.md"):
        assert not OUTSIDE.search(line), line
