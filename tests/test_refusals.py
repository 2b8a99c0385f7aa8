"""Broken plugins, and methods that would fail at run time, are refused in one line before anything is
written; the other plugins and every command that does not need the broken one keep working (issue: no
traceback, no FAILED folder, no silent accept)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from conftest import CHECKOUT, make_root
from missbench.cli import main

ZERO_FILL = (CHECKOUT / "methods" / "zero_fill.py").read_text()
HEAD = "import math\nfrom missbench.core.method import Method, Output\nfrom torch import nn\nimport torch\n"
TINY = HEAD + '''
class Tiny(Method):
    name = "tiny"
    outputs = {"segmentation": "regions", "classification": "labels"}
    defaults = {}

    def __init__(self, task, modalities, **params):
        super().__init__(task, modalities, **params)
        self.head = nn.Linear(sum(math.prod(task.inputs[m].shape) for m in modalities), task.out_channels(self.output)) \\
            if task.name == "classification" else \\
            nn.Conv3d(len(modalities), task.out_channels(self.output), 1)

    def forward(self, x, available, target=None):
        h = torch.cat([xm.flatten(1) for xm in x], 1) if isinstance(x, list) else x
        return Output(self.head(h))
'''
#: (id, plugin files {name: source}, method or data set asked for, extra flags, what the one line says)
BROKEN = [
    ("no-name", {"noname.py": HEAD + "class NoName(Method):\n    outputs = {'segmentation': 'regions'}\n"}, ["--methods", "noname"],
     "could not load: methods/noname.py (defines no method: class NoName has no `name` of its own"),
    ("helper-base-only", {"base.py": HEAD + "class Base(Method):\n    pass\n"}, ["--methods", "base"],
     "could not load: methods/base.py (defines no method"),
    ("duplicate-name", {"a.py": TINY, "b.py": TINY}, ["--methods", "tiny"], "method name 'tiny' is defined in two files"),
    ("init-raises", {"bad.py": TINY.replace("        super().__init__(task, modalities, **params)\n",
                                             "        super().__init__(task, modalities, **params)\n        raise KeyError('oops')\n")},
     ["--methods", "tiny"], "method 'tiny' cannot be built: KeyError: 'oops' (in its __init__)"),
    ("runtime-error", {"bad.py": TINY.replace("        super().__init__(task, modalities, **params)\n",
                                              "        super().__init__(task, modalities, **params)\n        raise RuntimeError('no GPU here')\n")},
     ["--methods", "tiny"], "method 'tiny' cannot be built: RuntimeError: no GPU here (in its __init__)"),
    ("exit-at-import", {"bad.py": "import sys\nsys.exit(0)\n"}, ["--methods", "bad"],
     "could not load: methods/bad.py (SystemExit: 0 (while importing it))"),
    ("no-parameters", {"bad.py": TINY.replace("        super().__init__(task, modalities, **params)\n",
                                "        super().__init__(task, modalities, **params)\n        return\n")
                       .replace("        h = torch.cat", "        return Output(torch.zeros(x.shape[0], 3, *x.shape[2:]))\n        h = torch.cat")},
     ["--methods", "tiny"], "method 'tiny' has no trainable parameters"),
    ("no-forward", {"bad.py": TINY.replace("    def forward(self", "    def other(self")}, ["--methods", "tiny"],
     "TypeError: method class Tiny: no forward pass: implement forward"),
    ("wrong-channels", {"bad.py": TINY.replace("nn.Conv3d(len(modalities), task.out_channels(self.output), 1)",
                                               "nn.Conv3d(len(modalities), 5, 1)")}, ["--methods", "tiny"],
     "method 'tiny' its logits have shape (1, 5, 16, 16, 16); the segmentation task's 'regions' output needs 3 channels"),
    ("classes-plus-one", {"bad.py": TINY.replace("task.out_channels(self.output)) \\",
                                                 "task.out_channels(self.output) + 1) \\")},
     ["--methods", "tiny", "--protocol", "audio_rate"], "the classification task's 'labels' output needs 10 channels"),
    ("tasks-a-string", {"bad.py": TINY.replace('    outputs = {"segmentation": "regions", "classification": "labels"}\n',
                                               '    tasks = "segmentation"\n')},
     ["--methods", "tiny"], "TypeError: method class Tiny: declare `outputs` (a convention per task); `tasks` follows from it"),
    ("outputs-a-string", {"bad.py": TINY.replace('{"segmentation": "regions", "classification": "labels"}', '"regions"')},
     ["--methods", "tiny"], "TypeError: method class Tiny: outputs 'regions': expected a mapping of each task it supports"),
    ("plain-list", {"bad.py": TINY.replace("            nn.Conv3d(len(modalities), task.out_channels(self.output), 1)",
                                           "            nn.Conv3d(len(modalities), task.out_channels(self.output), 1)\n"
                                           "        self.extra = [nn.Conv3d(4, 4, 1)]")},
     ["--methods", "tiny"], "holds modules or parameters in the plain list attribute 'extra'"),
    ("dataset-without-load", {"datasets/noload.py": "from missbench.core.dataset import Dataset\nclass NoLoad(Dataset):\n"
                              "    name = 'noload'\n    modalities = ('A', 'B')\n    def case_ids(self, split):\n        return []\n"},
     ["--methods", "zero_fill", "--dataset", "noload"], "could not load: datasets/noload.py (dataset NoLoad: does not implement load)"),
]


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def plugin_root(folder: Path, files: dict[str, str]) -> Path:
    """A benchmark root (it extends the shipped benchmark) holding ``files``: methods/<name>, or datasets/<name>."""
    root = make_root(folder, {name: text for name, text in files.items() if "/" not in name})
    for name, text in files.items():
        if "/" in name:
            (root / name).write_text(text)
    (root / "results" / "s").mkdir(parents=True)
    (root / "results" / "s" / "kept.txt").write_text("a file of an earlier sweep\n")
    return root


@pytest.mark.parametrize("files, argv, message", [pytest.param(*b[1:], id=b[0]) for b in BROKEN])
def test_a_broken_plugin_or_method_is_one_line_exit_2_and_nothing_is_written(tmp_path, capsys, files, argv, message):
    root = plugin_root(tmp_path / "root", files)
    before = snapshot(root / "results")
    assert main(["--root", str(root), "--budget", "smoke", "--no-progress", *argv, "--out", str(root / "results" / "s")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert snapshot(root / "results") == before


def test_a_broken_plugin_leaves_list_check_and_the_other_methods_working(tmp_path, capsys):
    root = plugin_root(tmp_path / "root", {"good.py": TINY, "bad.py": "import sys\nsys.exit(3)\n",
                                           "noname.py": HEAD + "class Helper(Method):\n    pass\n"})
    assert main(["list", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "  tiny         root" in out and "  shaspec      shipped" in out
    assert "broken: methods/bad.py: SystemExit: 3 (while importing it)" in out and "broken: methods/noname.py: defines no method" in out
    assert main(["check", "tiny", "--root", str(root)]) == 0
    capsys.readouterr()
    assert main(["--root", str(root), "--methods", "tiny", "--budget", "smoke", "--no-progress", "--threads", "1",
                 "--out", str(root / "results" / "s")]) == 0
    assert "1 models: 1 done" in capsys.readouterr().out
