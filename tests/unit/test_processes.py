"""Stopping supervised children: every process group is gone when `stop_together` returns,
the polite ones by their stop signal, the stubborn ones killed at the shared deadline."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from nebula_live.processes import ManagedProcess, listening_ports, process_tree, stop_together
from tests.services import free_port

# A shell that ignores SIGTERM and leaves a grandchild that ignores it too.
STUBBORN = ["sh", "-c", "trap '' TERM; sh -c \"trap '' TERM; sleep 600\" & sleep 600"]
POLITE = ["sleep", "600"]


def _started(name: str, argv: list[str], tmp_path: Path) -> ManagedProcess:
    process = ManagedProcess(name, argv, tmp_path / f"{name}.log")
    process.start()
    return process


def _wait_for_tree(process: ManagedProcess, size: int) -> list[int]:
    for _ in range(200):
        tree = process_tree(process.pid)
        if len(tree) >= size:
            return tree
        time.sleep(0.02)
    raise AssertionError(f"{process.name} did not start its children")


def test_stubborn_groups_are_killed_and_polite_ones_end_on_their_signal(tmp_path: Path) -> None:
    stubborn = _started("stubborn", STUBBORN, tmp_path)
    polite = _started("polite", POLITE, tmp_path)
    stubborn_tree = _wait_for_tree(stubborn, 3)
    stop_together([stubborn, polite], 0.5)
    assert stubborn.stopped() and polite.stopped()
    assert stubborn.exit_code() == -signal.SIGKILL
    assert polite.exit_code() == -signal.SIGTERM
    assert [pid for pid in stubborn_tree if Path(f"/proc/{pid}").exists()] == []


def test_stopping_a_process_never_started_or_already_gone_is_a_no_op(tmp_path: Path) -> None:
    never = ManagedProcess("never", POLITE, tmp_path / "never.log")
    gone = _started("gone", ["true"], tmp_path)
    gone.popen.wait(10)
    stop_together([never, gone], 0.5)
    assert never.stopped() and gone.stopped() and gone.exit_code() == 0


# Listens on a TCP and a UDP port (each given), and holds a connected TCP socket too.
LISTENER = """
import socket, sys, time
tcp = socket.create_server(("127.0.0.1", int(sys.argv[1])))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", int(sys.argv[2])))
peer = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
time.sleep(600)
"""


def test_a_child_listens_on_its_ports_once_it_holds_them(tmp_path: Path) -> None:
    tcp_port, udp_port = free_port(), free_port()
    child = _started(
        "listener", [sys.executable, "-c", LISTENER, str(tcp_port), str(udp_port)], tmp_path
    )
    try:
        for _ in range(500):
            if "ready" in child.log_tail():
                break
            time.sleep(0.02)
        assert child.listens_on("tcp", tcp_port)
        assert child.listens_on("udp", udp_port)
        assert not child.listens_on("tcp", udp_port) and not child.listens_on("udp", tcp_port)
        # Its connected socket's local port is not a listening one.
        connected = {port for kind, port in listening_ports(child.pid) if kind == "tcp"}
        assert connected == {tcp_port}
    finally:
        stop_together([child], 5)
    assert not child.listens_on("tcp", tcp_port)
