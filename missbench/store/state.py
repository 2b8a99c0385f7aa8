"""The one run-state type: what a model or score folder holds, and what a sweep says of a model's job.

A folder is ``absent``, ``incomplete`` (started, no marker), ``done``, ``corrupt`` (DONE, files damaged) or
``failed``; a sweep adds what only the queue or the process table knows: ``pending``, ``running``,
``unknown`` (no squeue here) and ``stopped`` (no result and no live job). States compare equal to their
names, so JSON, tables and command lines carry them as plain strings.
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    ABSENT = "absent"
    INCOMPLETE = "incomplete"
    DONE = "done"
    CORRUPT = "corrupt"
    FAILED = "failed"
    PENDING = "pending"
    RUNNING = "running"
    UNKNOWN = "unknown"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


#: A job that may still be coming or going: status waits for these, cancel stops them.
LIVE = (State.PENDING, State.RUNNING, State.UNKNOWN)
#: A model that ended without a usable result: a sweep holding one is not complete (exit status 1).
UNFINISHED = (State.FAILED, State.STOPPED, State.CORRUPT)
