"""Spool slots: each running ingest process holds its own; a dead one's is free for the next."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ingest.spool_slot import claim_slot

HOLD_A_SLOT = """
import sys, time
from pathlib import Path
from ingest.spool_slot import claim_slot
print(claim_slot(Path(sys.argv[1])).path, flush=True)
time.sleep(600)
"""


def test_running_processes_hold_different_slots_and_a_released_one_is_taken_again(
    tmp_path: Path,
) -> None:
    first, second = claim_slot(tmp_path), claim_slot(tmp_path)
    assert (first.path.name, second.path.name) == ("0", "1")
    first.release()
    again = claim_slot(tmp_path)
    assert again.path == first.path
    assert claim_slot(tmp_path).path.name == "2"


def test_the_slot_of_a_process_that_was_killed_is_free_for_the_next(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_SLOT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == str(tmp_path / "0")
        assert claim_slot(tmp_path).path.name == "1"  # held by the other process
    finally:
        holder.kill()
        holder.wait()
    assert claim_slot(tmp_path).path.name == "0"  # the kernel let it go with the process
