"""Command line: ``bench.py [run options]`` runs a protocol; ``bench.py list`` shows what is registered;
``bench.py check NAME`` runs a method through the contract; ``bench.py prepare`` / ``export`` fill and
read a real data set's cache; ``bench.py evaluate`` scores finished models again without training;
``bench.py status|collect|cancel <sweep>`` follow a sweep from any process.
One module per subcommand, imported when it is called, so that no command pays for another's imports
(``--help`` imports no torch)."""

from __future__ import annotations

import os
import sys

# Before torch starts OpenMP: threads that wait for their peers sleep instead of spinning. With the default
# (spinning) policy a training step on 2 cores took 17-24x longer as soon as another process was busy on the
# node; passive waiting costs little when the node is quiet (benchmarks/threads.py). Set OMP_WAIT_POLICY to
# choose otherwise; meta.json records it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from missbench.cli.args import data_root_alias
from missbench.experiment.root import use_root


def user_errors() -> tuple[type[Exception], ...]:
    """The errors that are the user's to fix (a bad name, option, file or folder): one line and exit status 2.
    Imported only once one is raised."""
    from missbench.cli.args import UsageError
    from missbench.engine.released import ReleasedError
    from missbench.engine.rescore import NothingToScore
    from missbench.engine.run import CodeChanged, Overlap
    from missbench.executors import SubmissionError
    from missbench.experiment.protocol import ProtocolError
    from missbench.experiment.registry import UnknownName
    from missbench.experiment.resources import ResourceError
    from missbench.experiment.root import RootError
    from missbench.experiment.validate import Invalid
    from missbench.store.sweep import SweepError

    return (UsageError, UnknownName, ProtocolError, ResourceError, SweepError, SubmissionError, RootError, Invalid, NothingToScore,
            ReleasedError, Overlap, CodeChanged)


def main(argv: list[str] | None = None) -> int:
    argv = data_root_alias(sys.argv[1:] if argv is None else argv)
    try:
        return dispatch(argv)
    except Exception as e:
        if isinstance(e, user_errors()):
            print(f"bench.py: error: {e}", file=sys.stderr)
            return 2
        if isinstance(e, OSError):  # the file system refused mid-way (a full disk, a folder that vanished)
            print(f"bench.py: error: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        raise
    finally:
        use_root(None)  # a command's --root holds for that command only


def dispatch(argv: list[str]) -> int:
    """Run the subcommand ``argv`` names (a run when it names none)."""
    if argv[:1] == ["list"]:
        from missbench.cli.list import list_command

        return list_command(argv[1:])
    if argv[:1] == ["check"]:
        from missbench.cli.check import check_command

        return check_command(argv[1:])
    if argv[:1] == ["prepare"]:
        from missbench.cli.prepare import prepare_command

        return prepare_command(argv[1:])
    if argv[:1] == ["export"]:
        from missbench.cli.export import export_command

        return export_command(argv[1:])
    if argv[:1] == ["evaluate"]:
        from missbench.cli.evaluate import evaluate_command

        return evaluate_command(argv[1:])
    if argv[:1] in (["status"], ["collect"], ["cancel"]):
        from missbench.cli.sweep import sweep_command

        return sweep_command(argv[0], argv[1:])
    from missbench.cli.run import run_command, run_parser

    return run_command(run_parser().parse_args(argv))
