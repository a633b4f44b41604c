"""Spooled segments of one session into storage and the database, strictly in order.

A sink takes segments that are already on disk (`ingest.spool`), each with its
`SpoolRecord`, and stores, records and announces them one by one, off the event loop in
a thread. A storage or database fault holds the sink, never the caller: the segment is
tried again, with backoff, until it is taken, and the ones behind it wait on disk. A sink
may follow another one of the same session (`after`): it stores nothing before that one is
done, so a publisher reconnecting while its old connection's segments still wait, or
continuing after segments replayed from a crash, never overtakes them.

Live publications (`ingest.publication`) and the replay of a crashed process's leftovers
(`ingest.spool_replay`) both store through one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace

from redis import Redis

from core.retry import TRANSIENT_ERRORS
from core.settings import Settings
from core.storage import ObjectStore
from ingest.spool import Spool, SpoolEntry
from ingest.spool_record import SpoolRecord
from packager.mirror import write_playlists
from packager.source_writer import SourceWriter

log = logging.getLogger(__name__)

# Between whole tries of a segment whose storage is away: 0.5 s, doubling, at most 5 s.
SINK_RETRY_FIRST_SECONDS = 0.5
SINK_RETRY_MAX_SECONDS = 5.0


class SegmentSink:
    def __init__(
        self,
        writer: SourceWriter,
        settings: Settings,
        store: ObjectStore,
        redis: Redis,
        spool: Spool,
        *,
        stream_id: uuid.UUID,
        session_id: uuid.UUID,
        after: asyncio.Task[None] | None = None,
    ) -> None:
        self.writer = writer
        self.settings = settings
        self.store = store
        self.redis = redis
        self.spool = spool
        self.stream_id = stream_id
        self.session_id = session_id
        self._after = after
        self._items: asyncio.Queue[tuple[SpoolRecord, SpoolEntry] | None] = asyncio.Queue()
        self._mirror_wanted = asyncio.Event()
        self._mirror_master = False
        self._mirror_pending = False
        self._closing = False
        self.task = asyncio.create_task(self._run(), name=f"sink-{session_id}")

    def put(self, record: SpoolRecord, entry: SpoolEntry) -> None:
        """Store this spooled segment after the ones put before it."""
        self._items.put_nowait((record, entry))

    def close(self) -> None:
        """Nothing more comes: `task` ends once everything put is stored."""
        self._items.put_nowait(None)

    async def _run(self) -> None:
        mirror = asyncio.create_task(self._mirror_playlists(), name=f"mirror-{self.session_id}")
        if self._after is not None:
            await asyncio.wait([self._after])  # its outcome is its own; only its end counts
        while (item := await self._items.get()) is not None:
            record, entry = item
            try:
                data = await asyncio.to_thread(self.spool.read, entry)
                first = await self._store(record, data)
                self._mirror_master |= first
                self._mirror_pending = True
                self._mirror_wanted.set()
            except Exception:
                log.exception(
                    "segment %s of session %s was lost", record.segment.sequence, self.session_id
                )
            self.spool.remove(entry)
        self._closing = True
        self._mirror_wanted.set()
        await mirror

    async def _store(self, record: SpoolRecord, data: bytes) -> bool:
        """Write one segment, trying again for as long as storage or the database is away
        (each try already retries a few times within ~1.5 s); True for the first one."""
        segment = replace(record.segment, data=data)
        delay = SINK_RETRY_FIRST_SECONDS
        while True:
            try:
                return await asyncio.to_thread(
                    self.writer.store_segment,
                    segment,
                    gop_seconds=record.gop_seconds,
                    target_duration=record.target_duration,
                    metadata=record.metadata,
                    bytes_ingested=record.bytes_ingested,
                )
            except TRANSIENT_ERRORS as exc:
                log.warning(
                    "segment %s of session %s waits for storage (%s: %s); %d spooled",
                    segment.sequence,
                    self.session_id,
                    type(exc).__name__,
                    exc,
                    self.spool.waiting,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, SINK_RETRY_MAX_SECONDS)

    async def _mirror_playlists(self) -> None:
        """Copy playlists into the bucket off the segment path, coalescing: when segments
        are stored faster than the bucket takes writes, only the newest state is written."""
        while True:
            if not self._mirror_pending:
                if self._closing:
                    return
                await self._mirror_wanted.wait()
                self._mirror_wanted.clear()
                continue
            master, self._mirror_master, self._mirror_pending = self._mirror_master, False, False
            try:
                await asyncio.to_thread(
                    write_playlists,
                    self.settings,
                    self.store,
                    self.redis,
                    self.stream_id,
                    master=master,
                )
            except Exception:
                log.exception("playlists of stream %s not mirrored", self.stream_id)
