"""Which part of the data dir's spool is this ingest process's.

Several ingest processes share a data dir (`up` runs one per core, all on the same ports),
and each must replay only what a process that died left, never what a live sibling is
still storing. So the spool has numbered slots (`spool/0`, `spool/1`, ...), and a process
takes the lowest one no running process holds: an exclusive `flock` on the slot's lock
file, held for the process's life and released by the kernel however it ends. Whatever a
free slot holds was left by a process that stopped, and the one that takes the slot next
replays it.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = ".lock"


@dataclass(frozen=True, slots=True)
class SpoolSlot:
    """A slot this process holds until `release` or its end."""

    path: Path
    fd: int

    def release(self) -> None:
        os.close(self.fd)


def claim_slot(base: Path) -> SpoolSlot:
    """The lowest slot under `base` that no running process holds, now held by this one."""
    base.mkdir(parents=True, exist_ok=True)
    number = 0
    while True:
        slot = base / str(number)
        slot.mkdir(exist_ok=True)
        fd = os.open(slot / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a running process has it
            os.close(fd)
            number += 1
            continue
        return SpoolSlot(slot, fd)
