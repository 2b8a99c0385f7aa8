"""Which process holds a run, in a form that survives PID reuse: (host, pid, start time).

A PID alone is not an identity: once its process ends, the kernel hands the number to another one.
The start time (field 22 of ``/proc/<pid>/stat``, clock ticks since boot) tells them apart, so a
recorded process counts as alive only while a process with its PID and its start time runs on its
host. Where /proc is missing (not Linux) start times are unknown and a live PID on the same host counts.
"""

from __future__ import annotations

import os
import socket
from typing import Any


def start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), or None: no such process, or no /proc."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields after "pid (comm)": state is 3, starttime 22


def identity(pid: int | None = None) -> dict[str, Any]:
    """The record of process ``pid`` (default: this one): host, pid and start time."""
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": pid, "started": start_time(pid)}


def alive(record: dict[str, Any] | None) -> bool:
    """Whether the recorded process still runs: on this host, its PID alive with the recorded start time."""
    if not record or record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return False
    try:
        os.kill(record["pid"], 0)
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return False
    return start_time(record["pid"]) == record.get("started")
