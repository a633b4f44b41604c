"""Closed live segments on local disk until storage and the database have taken them.

A segment closes every couple of seconds whether or not the object store and PostgreSQL
answer. Its bytes go to a file here first, and the session's sink (`ingest.sink`) stores
and records it from that file, in order, retrying for as long as storage is away rather
than giving it up. Waiting segments cost disk, not memory, and the spool's size is
bounded: once `max_bytes` are waiting, the ingest refuses new publishes with the reason and
keeps the live ones (their segments go on spooling past the bound, since dropping them
would lose them).

Each entry is durable on its own: `<session>/<sequence>-<random>.json`, the sidecar (a
`SpoolRecord`: session, stream, place on the timeline, init segment, what the publication
knew), then `<sequence>-<random>.m4s`, the bytes, each written whole, fsynced and renamed
into place; the segment file appearing commits the pair. So a process that stops or is
killed leaves segments the next one on the same data dir reads back at start
(`leftovers`) and replays into their recordings (`ingest.spool_replay`, which also says
what happens when a recording can no longer take them in order: they are set aside under
`unplaced/`, counted and logged, never deleted). Each ingest reports its spool into Redis
(`REPORT_PREFIX`, expiring), where the API's /metrics and /healthz read them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

from ingest import spool_record
from ingest.spool_record import SpoolRecord

log = logging.getLogger(__name__)

REPORT_PREFIX = "nebula:ingest-spool:"
SEGMENT_SUFFIX = ".m4s"
SIDECAR_SUFFIX = ".json"
UNPLACED = "unplaced"  # segments no recording could take, kept for the operator
REPORT_TTL_SECONDS = 30


class SpoolFullError(RuntimeError):
    """New publishes are refused: too many bytes are waiting for storage."""


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    path: Path  # the segment's bytes; its sidecar (a `SpoolRecord`) is `sidecar`
    size: int

    @property
    def sidecar(self) -> Path:
        return self.path.with_suffix(SIDECAR_SUFFIX)


@dataclass(frozen=True, slots=True)
class Leftover:
    """A segment a process that stopped left in the spool, with its sidecar read back."""

    record: SpoolRecord
    entry: SpoolEntry


class Spool:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self.waiting = 0
        self.unplaced = 0  # segments set aside under `unplaced/`, until the operator acts
        self._lock = threading.Lock()  # puts run in threads, removes on the event loop
        self.root.mkdir(parents=True, exist_ok=True)
        self.leftovers: dict[uuid.UUID, list[Leftover]] = self._load_leftovers()

    def _load_leftovers(self) -> dict[uuid.UUID, list[Leftover]]:
        """Read back what a stopped process left, by session, in each session's order. A
        segment without a readable sidecar is set aside; a sidecar without its segment file
        was written by a process that died before the segment reached the disk: dropped."""
        self.unplaced = sum(1 for _ in (self.root / UNPLACED).rglob(f"*{SEGMENT_SUFFIX}"))
        if self.unplaced:
            log.warning(
                "spool %s holds %d segment(s) set aside earlier that no recording could "
                "take; they stay there for the operator",
                self.root / UNPLACED,
                self.unplaced,
            )
        found: dict[uuid.UUID, list[Leftover]] = {}
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != UNPLACED):
            for partial in folder.glob(".*.partial"):
                partial.unlink()
            for sidecar in folder.glob(f"*{SIDECAR_SUFFIX}"):
                if not sidecar.with_suffix(SEGMENT_SUFFIX).exists():
                    log.warning(
                        "segment %s never reached the disk; its sidecar is dropped", sidecar
                    )
                    sidecar.unlink()
            for path in folder.glob(f"*{SEGMENT_SUFFIX}"):
                entry = SpoolEntry(path, path.stat().st_size)
                self.waiting, self.used_bytes = self.waiting + 1, self.used_bytes + entry.size
                try:
                    record = spool_record.decode(entry.sidecar.read_bytes())
                except (OSError, spool_record.SpoolRecordError) as exc:
                    self.set_aside([entry], f"its sidecar cannot be read ({exc})")
                    continue
                found.setdefault(record.session_id, []).append(Leftover(record, entry))
            self.release_folder(folder)
        for leftovers in found.values():
            leftovers.sort(key=lambda left: left.record.segment.sequence)
        if found:
            log.warning(
                "spool %s holds %d segment(s), %.1f MiB, of %d session(s), from a process that "
                "stopped before storage took them; replaying them",
                self.root,
                self.waiting,
                self.used_bytes / 2**20,
                len(found),
            )
        return found

    @property
    def full(self) -> bool:
        """New publishes are refused while it holds `max_bytes` or more."""
        return self.used_bytes >= self.max_bytes

    def report(self, redis: Redis, ingest: str) -> None:
        """Say in Redis how full this ingest's spool is, for the API to show."""
        state = {
            "used_bytes": self.used_bytes,
            "max_bytes": self.max_bytes,
            "waiting": self.waiting,
            "unplaced": self.unplaced,
            "full": self.full,
        }
        redis.set(f"{REPORT_PREFIX}{ingest}", json.dumps(state), ex=REPORT_TTL_SECONDS)

    def check_room(self) -> None:
        """Raise SpoolFullError when a new publish should be refused."""
        if self.full:
            raise SpoolFullError(
                f"this ingest holds {self.used_bytes / 2**20:.0f} MiB of segments that storage "
                f"has not taken yet (limit {self.max_bytes / 2**20:.0f} MiB, "
                "NEBULA_SPOOL_MAX_BYTES); try again later or another ingest"
            )

    def put(self, record: SpoolRecord, data: bytes) -> SpoolEntry:
        """Write the segment's sidecar, then its bytes, each whole and durably (blocking: run
        it in a thread); the entry says where. The segment file's appearance commits both."""
        folder = self.root / str(record.session_id)
        folder.mkdir(exist_ok=True)
        stem = f"{record.segment.sequence:08d}-{uuid.uuid4().hex[:8]}"
        entry = SpoolEntry(folder / f"{stem}{SEGMENT_SUFFIX}", len(data))
        _write_durably(entry.sidecar, spool_record.encode(record))
        _write_durably(entry.path, data)
        _fsync_directory(folder)
        with self._lock:
            self.used_bytes += len(data)
            self.waiting += 1
        return entry

    def read(self, entry: SpoolEntry) -> bytes:
        return entry.path.read_bytes()

    def remove(self, entry: SpoolEntry) -> None:
        """The segment is stored and recorded (or given up for a bug): free its room. Its
        bytes go first: a sidecar alone is dropped at the next start, bytes alone are not."""
        entry.path.unlink(missing_ok=True)
        entry.sidecar.unlink(missing_ok=True)
        with self._lock:
            self.used_bytes -= entry.size
            self.waiting -= 1

    def set_aside(self, entries: list[SpoolEntry], reason: str) -> Path:
        """Move segments no recording can take into `unplaced/<session>/`, out of the
        spool's room, and say so; returns where they are now."""
        folder = self.root / UNPLACED / entries[0].path.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            for path in (entry.sidecar, entry.path):
                if path.exists():
                    path.replace(folder / path.name)
            with self._lock:
                self.used_bytes -= entry.size
                self.waiting -= 1
                self.unplaced += 1
        log.warning("%d spooled segment(s) set aside in %s: %s", len(entries), folder, reason)
        return folder

    def release(self, session_id: uuid.UUID) -> None:
        """Remove a session's folder once everything in it is stored (it is empty)."""
        self.release_folder(self.root / str(session_id))

    @staticmethod
    def release_folder(folder: Path) -> None:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _write_durably(path: Path, data: bytes) -> None:
    """`data` in `path`, whole or not at all, on disk when this returns."""
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


def _fsync_directory(folder: Path) -> None:
    """Make the renames into `folder` durable too."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def spool_reports(redis: Redis) -> dict[str, dict]:
    """Every running ingest's last spool report, by ingest (host:pid)."""
    keys = list(redis.scan_iter(match=f"{REPORT_PREFIX}*", count=100))
    values = redis.mget(keys) if keys else []
    return {
        key.decode().removeprefix(REPORT_PREFIX): json.loads(value)
        for key, value in zip(keys, values, strict=True)
        if value is not None
    }
