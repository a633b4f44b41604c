"""Child processes that die with their parent and stop as a whole process group."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child before exec: if the supervisor is killed outright, the child follows."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """One supervised child with its own log file and process group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        stop_timeout: float = 15.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.user = user
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                user=self.user,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def exit_code(self) -> int | None:
        """None while running."""
        return self.popen.poll() if self.popen else None

    def request_stop(self) -> None:
        """Send the stop signal to the whole group; `stopped` says when it is gone."""
        if self.popen is not None:
            _signal_group(self.popen.pid, self.stop_signal)

    def stopped(self) -> bool:
        """Whether the child is reaped and nothing of its process group is left."""
        if self.popen is None:
            return True
        return self.popen.poll() is not None and not _group_alive(self.popen.pid)

    def kill(self, seconds: float = 2.0) -> None:
        """SIGKILL the group and wait up to `seconds` for its members (orphans included: the
        init process reaps those) to be gone."""
        if self.popen is None:
            return
        _signal_group(self.popen.pid, signal.SIGKILL)
        deadline = time.monotonic() + seconds
        while not self.stopped() and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        """Ask politely, then kill the whole group; returns once every member is gone."""
        stop_together([self], self.stop_timeout)

    def listens_on(self, protocol: str, port: int) -> bool:
        """Whether the child holds a listening TCP or a bound UDP socket on `port`:
        ready for that port, even while others of its kind share it."""
        return self.popen is not None and (protocol, port) in listening_ports(self.popen.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


# /proc/net/{tcp,udp}[6]: the local address is field 1 (hex port after ':'), the state
# field 3 (TCP LISTEN is 0A; an unconnected UDP socket is 07), the inode field 9.
_LISTENING_STATES = {"tcp": "0A", "udp": "07"}


def listening_ports(pid: int) -> set[tuple[str, int]]:
    """("tcp" | "udp", port) of every listening socket the process holds."""
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone
        return set()
    inodes = set()
    for fd in descriptors:
        with contextlib.suppress(OSError):  # closed while we looked
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for protocol, state in _LISTENING_STATES.items():
        for table in (protocol, f"{protocol}6"):
            try:
                lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            except OSError:
                continue
            for fields in (line.split() for line in lines):
                if fields[3] == state and fields[9] in inodes:
                    found.add((protocol, int(fields[1].rsplit(":", 1)[1], 16)))
    return found


def stop_together(processes: Sequence[ManagedProcess], seconds: float) -> None:
    """Ask every process to stop at once and give them `seconds` between them, not each: the
    groups still alive then are killed."""
    for process in processes:
        process.request_stop()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(p.stopped() for p in processes):
        time.sleep(0.05)
    for process in processes:
        if not process.stopped():
            process.kill()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_tree(root: int) -> list[int]:
    """`root` and every live descendant, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def resident_bytes(pids: list[int]) -> int:
    """Sum of resident memory (RSS) of these processes."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total
