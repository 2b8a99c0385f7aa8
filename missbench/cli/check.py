"""``bench.py check NAME [--param KEY=VALUE ...]``: a method through the contract on toy data, for each
task it declares (missbench/engine/contract.py; the role ``benchopt test`` plays for solvers). Prints a
pass/fail table with a one-line fix hint under each failure; exit status 1 when a check fails."""

from __future__ import annotations

import argparse

from missbench.cli.args import key_values, root_option
from missbench.experiment import registry
from missbench.experiment.root import use_root

RESULT = {True: "pass", False: "FAIL", None: "n/a"}


def check_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py check", description="Run a method through the Method contract on toy data: "
                                "every availability pattern, missing inputs ignored, shared encoding, same seed, losses, "
                                "checkpoint, parameters.")
    root_option(p)
    p.add_argument("name", help="a method name (methods/<file>.py in the root)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="method parameter, e.g. width=4 for a fast check (default: the method's defaults)")
    args = p.parse_args(argv)
    use_root(args.root)
    cls = registry.method_class(args.name)
    params = key_values(args.param, "--param")
    import torch

    from missbench.engine.contract import check_method
    from missbench.experiment.validate import check_declared

    torch.set_num_threads(1)  # toy sizes: more threads only wait on each other

    check_declared("--param", params, cls.defaults, cls.constraints)
    print(f"bench.py check {cls.name}" + (f" ({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")
          + ": toy data, 16^3 volumes of 4 modalities; 8 samples of an image, a spectrogram and a table row")
    findings = check_method(cls, params)
    print(f"{'task':<15} {'check':<16} {'result':<7} detail")
    for f in findings:
        print(f"{f.task:<15} {f.check:<16} {RESULT[f.passed]:<7} {f.detail}")
        if f.passed is False:
            print(f"{'':<32}fix: {f.hint}")
    counts = {word: sum(RESULT[f.passed] == word for f in findings) for word in ("pass", "FAIL", "n/a")}
    print(f"{counts['pass']} passed, {counts['FAIL']} failed, {counts['n/a']} not applicable")
    return 1 if counts["FAIL"] else 0
