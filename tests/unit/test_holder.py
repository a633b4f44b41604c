"""Telling from /proc whether a session's holder, an ingest process, has exited."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ingest.holder import known_dead, of_process, this_process


def test_a_running_process_is_not_dead_and_one_that_exited_is_even_before_it_is_reaped() -> None:
    child = subprocess.Popen(["sleep", "60"])
    name = of_process(child.pid)
    assert not known_dead(name)
    child.kill()
    stat = Path(f"/proc/{child.pid}/stat")
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        pass  # a zombie until waited for
    assert known_dead(name)
    child.wait()
    assert known_dead(name)


def test_a_pid_taken_by_another_process_since_is_not_the_holder() -> None:
    *where, pid, started = this_process().split("/")
    assert not known_dead(this_process())
    assert known_dead("/".join([*where, pid, str(int(started) + 1)]))


def test_holders_elsewhere_or_unreadable_are_never_judged_dead_here() -> None:
    host, boot, namespace, pid, started = this_process().split("/")
    dead_pid = "4194304"  # above the kernel's pid_max: no process has it here
    elsewhere = [
        f"another-host/{boot}/{namespace}/{dead_pid}/1",
        f"{host}/another-boot/{namespace}/{dead_pid}/1",
        f"{host}/{boot}/pid:[1]/{dead_pid}/1",  # another container's pids
    ]
    for holder in [*elsewhere, None, "", "garbage", f"{host}/{boot}/{namespace}/x/1"]:
        assert not known_dead(holder), holder
    assert known_dead(f"{host}/{boot}/{namespace}/{dead_pid}/1")
