"""The fast commands stay fast (figures: benchmarks/cli_speed.py): ``bench.py --help`` imports no torch,
and ``bench.py list`` counts parameters on the meta device, allocating nothing and loading no torch._dynamo."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import CHECKOUT


def fresh(code: str) -> str:
    """The last line ``code`` prints, run in a fresh process in the checkout."""
    out = subprocess.run([sys.executable, "-c", code], cwd=CHECKOUT, capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


def test_help_imports_no_torch_and_no_heavy_dependency():
    code = ("import sys\nfrom missbench.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'numpy', 'scipy', 'medpy', 'submitit', 'nibabel', 'sklearn') if m in sys.modules))")
    assert fresh(code) == "[]"


def test_a_sweep_is_validated_without_initialising_its_methods():
    """Validation builds every method of the sweep on the meta device without running nn.init (an initialiser
    fills memory for nothing; ShaSpec's official backbone holds 187.7M parameters). Its one forward pass there, which
    checks the logits' shape before anything is written, imports torch._dynamo through torch's meta kernels of the
    normalisations: about a second of CPU, once per process."""
    code = ("import contextlib, io, json\nimport torch\nfrom missbench.cli import main\n"
            "calls = []\n"
            "for name in [n for n in vars(torch.nn.init) if n.endswith('_') and not n.startswith('_')]:\n"
            "    f = getattr(torch.nn.init, name)\n"
            "    setattr(torch.nn.init, name, lambda *a, f=f, name=name, **k: calls.append(name) or f(*a, **k))\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    status = main(['--methods', 'shaspec,rfnet,mmformer,hemis,uhved,smil,ul4m4', '--dry-run', '--out', '/nonexistent/sweep'])\n"
            "print(json.dumps([status, calls]))")
    assert fresh(code) == "[0, []]"


def test_list_counts_parameters_without_allocating_them():
    """ShaSpec's official backbone (187.7M parameters, 750 MB in float32) is counted, not built in memory."""
    code = ("import contextlib, io, json, resource, sys\nimport torch\nfrom missbench.cli import main\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n    main(['list', '--methods'])\n"
            "grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024\n"
            "print(json.dumps([out.getvalue(), grown_mib, 'torch._dynamo' in sys.modules]))")
    listing, grown_mib, dynamo = json.loads(fresh(code))
    shaspec = next(line for line in listing.splitlines() if line.split()[:1] == ["shaspec"])
    assert shaspec.split()[1:4] == ["root", "187,708,132", "1,471,175"]  # where from; official and common backbones
    assert grown_mib < 200 and not dynamo
