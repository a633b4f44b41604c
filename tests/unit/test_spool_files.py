"""The spool's files: a sidecar and the segment's bytes, written whole, counted while they
wait, read back in order when left behind, and set aside when they cannot be read."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from ingest.spool import Spool
from tests.media import bare_segment, spool_record


def test_entries_are_whole_files_counted_until_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=10_000)
    session = uuid.uuid4()
    first = spool.put(spool_record(bare_segment(1), session), b"a" * 300)
    second = spool.put(spool_record(bare_segment(2), session), b"b" * 200)
    assert (spool.used_bytes, spool.waiting) == (500, 2)
    names = sorted(p.name for p in (tmp_path / "spool" / str(session)).iterdir())
    assert [name.rsplit(".", 1)[1] for name in names] == ["json", "m4s", "json", "m4s"]
    assert not list((tmp_path / "spool").rglob(".*.partial"))
    assert spool.read(second) == b"b" * 200
    spool.remove(first)
    spool.remove(second)
    spool.release(session)
    assert (spool.used_bytes, spool.waiting) == (0, 0)
    assert list((tmp_path / "spool").iterdir()) == []


def test_what_a_stopped_process_left_is_read_back_in_order_and_counted(
    tmp_path: Path, caplog
) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=10_000)
    session, other = uuid.uuid4(), uuid.uuid4()
    records = [spool_record(bare_segment(n), session) for n in (12, 3, 100_000_000, 7)]
    for record in records:
        spool.put(record, bytes([record.segment.sequence % 256]) * 100)
    spool.put(spool_record(bare_segment(5), other), b"o" * 50)
    with caplog.at_level(logging.WARNING, logger="ingest.spool"):
        again = Spool(tmp_path / "spool", max_bytes=10_000)
    assert "holds 5 segment(s)" in caplog.text and "replaying them" in caplog.text
    assert (again.used_bytes, again.waiting) == (450, 5)  # waiting again, for this process
    left = again.leftovers[session]
    assert [leftover.record for leftover in left] == sorted(
        records, key=lambda record: record.segment.sequence
    )
    assert [again.read(leftover.entry)[0] for leftover in left] == [3, 7, 12, 0]
    assert [leftover.record.segment.sequence for leftover in again.leftovers[other]] == [5]


def test_a_segment_without_a_readable_sidecar_is_set_aside_not_lost(tmp_path: Path, caplog) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=10_000)
    session = uuid.uuid4()
    kept = spool.put(spool_record(bare_segment(1), session), b"k" * 100)
    broken = spool.put(spool_record(bare_segment(2), session), b"b" * 100)
    broken.sidecar.write_bytes(b'{"format": 1, "sequence":')  # cut short
    lonely = spool.put(spool_record(bare_segment(3), session), b"l" * 100)
    lonely.path.unlink()  # the process died between the sidecar and the bytes
    partial = kept.path.with_name(".00000004-abcdef12.m4s.partial")
    partial.write_bytes(b"half")
    with caplog.at_level(logging.WARNING, logger="ingest.spool"):
        again = Spool(tmp_path / "spool", max_bytes=10_000)
    assert "cannot be read" in caplog.text and "unreadable sidecar" in caplog.text
    assert [left.entry.path.name for left in again.leftovers[session]] == [kept.path.name]
    assert (again.used_bytes, again.waiting, again.unplaced) == (100, 1, 1)
    unplaced = tmp_path / "spool" / "unplaced" / str(session)
    assert (unplaced / broken.path.name).read_bytes() == b"b" * 100
    assert not lonely.sidecar.exists() and not partial.exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ingest.spool"):
        assert Spool(tmp_path / "spool", max_bytes=10_000).unplaced == 1  # still counted
    assert "set aside earlier" in caplog.text
