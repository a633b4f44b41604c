"""Closed live segments on local disk until storage and the database have taken them.

A segment closes every couple of seconds whether or not the object store and PostgreSQL
answer. Its bytes go to a file here first (written whole and fsynced), and the sink
(`ingest.publication`) stores and records it from that file, in order, retrying for as
long as storage is away rather than giving it up. Waiting segments cost disk, not memory,
and the spool's size is bounded: once `max_bytes` are waiting, the ingest refuses new
publishes with the reason and keeps the live ones (their segments go on spooling past the
bound, since dropping them would lose them).

The spool is this process's: files a stopped or killed process left behind are reported
at start (and left for the operator), not replayed. Each ingest reports its spool into
Redis (`REPORT_PREFIX`, expiring), where the API's /metrics and /healthz read them.
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

log = logging.getLogger(__name__)

REPORT_PREFIX = "nebula:ingest-spool:"
REPORT_TTL_SECONDS = 30


class SpoolFullError(RuntimeError):
    """New publishes are refused: too many bytes are waiting for storage."""


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    path: Path
    size: int


class Spool:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self.waiting = 0
        self._lock = threading.Lock()  # puts run in threads, removes on the event loop
        self.root.mkdir(parents=True, exist_ok=True)
        self._report_leftovers()

    def _report_leftovers(self) -> None:
        left = [p for p in self.root.rglob("*.m4s") if p.is_file()]
        if left:
            size = sum(p.stat().st_size for p in left)
            log.warning(
                "spool %s holds %d segment(s), %.1f MiB, from a process that stopped before "
                "storage took them; they are not replayed",
                self.root,
                len(left),
                size / 2**20,
            )

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

    def put(self, session_id: uuid.UUID, sequence: int, data: bytes) -> SpoolEntry:
        """Write `data` whole and durably (blocking: run it in a thread); the entry says
        where."""
        folder = self.root / str(session_id)
        folder.mkdir(exist_ok=True)
        path = folder / f"{sequence:08d}-{uuid.uuid4().hex[:8]}.m4s"
        partial = path.with_name(f".{path.name}.partial")
        with open(partial, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
        with self._lock:
            self.used_bytes += len(data)
            self.waiting += 1
        return SpoolEntry(path, len(data))

    def read(self, entry: SpoolEntry) -> bytes:
        return entry.path.read_bytes()

    def remove(self, entry: SpoolEntry) -> None:
        """The segment is stored and recorded (or given up for a bug): free its room."""
        entry.path.unlink(missing_ok=True)
        with self._lock:
            self.used_bytes -= entry.size
            self.waiting -= 1

    def release(self, session_id: uuid.UUID) -> None:
        """Remove a publication's folder once everything in it is stored (it is empty)."""
        with contextlib.suppress(OSError):
            (self.root / str(session_id)).rmdir()


def spool_reports(redis: Redis) -> dict[str, dict]:
    """Every running ingest's last spool report, by ingest (host:pid)."""
    keys = list(redis.scan_iter(match=f"{REPORT_PREFIX}*", count=100))
    values = redis.mget(keys) if keys else []
    return {
        key.decode().removeprefix(REPORT_PREFIX): json.loads(value)
        for key, value in zip(keys, values, strict=True)
        if value is not None
    }
