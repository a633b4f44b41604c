"""The spool's files: written whole, counted while they wait, reported when left behind."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from ingest.spool import Spool


def test_entries_are_whole_files_counted_until_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=10_000)
    session = uuid.uuid4()
    first, second = spool.put(session, 1, b"a" * 300), spool.put(session, 2, b"b" * 200)
    assert (spool.used_bytes, spool.waiting) == (500, 2)
    assert [p.name for p in (tmp_path / "spool" / str(session)).iterdir()] != []
    assert not list((tmp_path / "spool").rglob(".*.partial"))
    assert spool.read(second) == b"b" * 200
    spool.remove(first)
    spool.remove(second)
    spool.release(session)
    assert (spool.used_bytes, spool.waiting) == (0, 0)
    assert list((tmp_path / "spool").iterdir()) == []


def test_files_a_stopped_process_left_are_reported_and_kept(tmp_path: Path, caplog) -> None:
    Spool(tmp_path / "spool", max_bytes=10_000).put(uuid.uuid4(), 3, b"c" * 2048)
    with caplog.at_level(logging.WARNING, logger="ingest.spool"):
        again = Spool(tmp_path / "spool", max_bytes=10_000)
    assert "holds 1 segment(s)" in caplog.text and "not replayed" in caplog.text
    assert again.used_bytes == 0  # not this process's to count
    assert len(list((tmp_path / "spool").rglob("*.m4s"))) == 1
