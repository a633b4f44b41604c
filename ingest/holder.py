"""Which ingest process holds a live session, so that one on the same host can tell at once
that the holder died.

A SIGKILLed ingest stops refreshing its sessions' heartbeats, and any ingest anywhere takes
the publisher back once a heartbeat is a stale period old (`ingest.sessions`). But the
publisher usually comes back to the same host (a supervisor restarts the ingest within a
second or two, and OBS reconnects to the same address), and there the question has an
exact answer sooner: the session names its holder, and a process that no longer runs
cannot be publishing.

A holder is `host/boot/pid-namespace/pid/start`: only a holder on this host, since this
boot and in this pid namespace can be looked up here (a container shares the kernel's
boot id but not its pids), and the process's start time tells a pid reused since from the
holder. Any other holder is never judged dead here: its heartbeat is the only sign.
"""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path

PROC = Path("/proc")


def _start_ticks(pid: int) -> str | None:
    """When the process started, in clock ticks since boot (/proc/PID/stat field 22);
    None if it does not run (a zombie has exited, whether or not it was reaped yet)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; it ends at the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


@cache
def _where() -> str:
    """This host, boot and pid namespace: the part a holder here shares with us."""
    boot = (PROC / "sys/kernel/random/boot_id").read_text().strip()
    namespace = os.readlink(PROC / "self/ns/pid")
    return f"{socket.gethostname()}/{boot}/{namespace}"


def of_process(pid: int) -> str:
    """The holder name of a running process of this host."""
    return f"{_where()}/{pid}/{_start_ticks(pid)}"


def this_process() -> str:
    return of_process(os.getpid())


def known_dead(holder: str | None) -> bool:
    """Whether `holder` is a process of this host, boot and pid namespace that has exited."""
    if holder is None:
        return False
    where, _, process = holder.rpartition("/")
    where, _, pid = where.rpartition("/")
    if where != _where() or not pid.isdigit():
        return False
    return _start_ticks(int(pid)) != process
