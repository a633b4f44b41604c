"""Stopping supervised children: every process group is gone when `stop_together` returns,
the polite ones by their stop signal, the stubborn ones killed at the shared deadline."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from nebula_live.processes import ManagedProcess, process_tree, stop_together

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
