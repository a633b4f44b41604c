"""One accepted publish: demuxed media into the packager, closed segments out to storage.

Protocol-neutral: the RTMP and SRT servers demux their own container (FLV, MPEG-TS) and
push access units and codec configurations here.

Packaging runs on the event loop (it is cheap). Each closed segment goes to the spool
(`ingest.spool`, a file on local disk) at once, and a sink task stores it, records it and
announces it from there, strictly in order, off the loop in a thread. A storage or
database fault holds the sink, not the publisher: the segment is tried again, with backoff,
until it is taken, and the ones behind it wait on disk, not in memory.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from celery import Celery
from redis import Redis

from core.retry import TRANSIENT_ERRORS
from core.settings import Settings
from core.storage import ObjectStore
from ingest import sessions
from ingest.spool import Spool, SpoolEntry
from media.hls.segment_packager import PackagedSegment, SegmentPackager
from media.types import AccessUnit, AudioConfig, VideoConfig
from packager.mirror import write_playlists
from packager.source_writer import SourceWriter

log = logging.getLogger(__name__)

# Between whole tries of a segment whose storage is away: 0.5 s, doubling, at most 5 s.
SINK_RETRY_FIRST_SECONDS = 0.5
SINK_RETRY_MAX_SECONDS = 5.0


class Publication:
    def __init__(
        self,
        grant: sessions.PublishGrant,
        settings: Settings,
        store: ObjectStore,
        redis: Redis,
        celery: Celery,
        spool: Spool,
    ) -> None:
        self.grant = grant
        self.spool = spool
        self.settings = settings
        self.store = store
        self.redis = redis
        self.packager = SegmentPackager(
            settings.segment_seconds,
            first_sequence=grant.first_sequence,
            timeline_start=grant.timeline_start,
            init_index=grant.init_index,
            discontinuity=grant.discontinuity,
            target_duration=grant.target_duration,
            max_open_targets=settings.segment_max_open_targets,
            max_open_bytes=settings.segment_max_open_bytes,
        )
        self.metadata: dict[str, Any] = {}
        self.bytes_ingested = 0
        self.writer = SourceWriter(
            settings,
            store,
            redis,
            celery,
            stream_id=grant.stream_id,
            session_id=grant.session_id,
            timeline_start=grant.timeline_start,
            transcode=grant.transcode,
        )
        # Closed segments (in memory for as long as their spool write takes), then spooled
        # ones (their bytes on disk only).
        self._queue: asyncio.Queue[PackagedSegment | None] = asyncio.Queue()
        self._spooled: asyncio.Queue[tuple[PackagedSegment, SpoolEntry] | None] = asyncio.Queue()
        self._spooler = asyncio.create_task(self._spool(), name=f"spool-{grant.session_id}")
        self._sink = asyncio.create_task(self._drain(), name=f"sink-{grant.session_id}")
        self._mirror_wanted = asyncio.Event()
        self._mirror_master = False
        self._mirror_pending = False
        self._closing = False
        self._mirror = asyncio.create_task(
            self._mirror_playlists(), name=f"mirror-{grant.session_id}"
        )

    def push(self, items: list[AccessUnit | VideoConfig | AudioConfig], received: int) -> None:
        """Package demuxed media; `received` counts the protocol payload bytes behind it."""
        self.bytes_ingested += received
        for item in items:
            if isinstance(item, AccessUnit):
                closed = self.packager.push(item)
            else:
                closed = self.packager.configure(item)
            for segment in closed:
                self._queue.put_nowait(segment)

    async def record_report(self, report: dict[str, Any]) -> None:
        """Keep what the ingest observed of the transport on the session (its sessions API
        shows it). Best effort: a database fault costs the report, never the publish."""
        try:
            await asyncio.to_thread(
                sessions.record_ingest_report,
                self.settings.database_url,
                self.grant.session_id,
                report,
            )
        except Exception:
            log.exception("ingest report of session %s not recorded", self.grant.session_id)

    async def finish(self) -> None:
        """Close the last segment and wait until everything closed so far is stored."""
        for segment in self.packager.flush():
            self._queue.put_nowait(segment)
        self._queue.put_nowait(None)
        await self._spooler
        await self._sink
        self.spool.release(self.grant.session_id)
        self._closing = True
        self._mirror_wanted.set()
        await self._mirror

    async def _spool(self) -> None:
        while (segment := await self._queue.get()) is not None:
            entry = await asyncio.to_thread(
                self.spool.put, self.grant.session_id, segment.sequence, segment.data
            )
            self._spooled.put_nowait((replace(segment, data=b""), entry))
        self._spooled.put_nowait(None)

    async def _drain(self) -> None:
        while (item := await self._spooled.get()) is not None:
            segment, entry = item
            try:
                data = await asyncio.to_thread(self.spool.read, entry)
                first = await self._store(replace(segment, data=data))
                self._mirror_master |= first
                self._mirror_pending = True
                self._mirror_wanted.set()
            except Exception:
                log.exception(
                    "segment %s of session %s was lost", segment.sequence, self.grant.session_id
                )
            self.spool.remove(entry)

    async def _store(self, segment: PackagedSegment) -> bool:
        """Write one segment, trying again for as long as storage or the database is away
        (each try already retries a few times within ~1.5 s); True for the first one."""
        delay = SINK_RETRY_FIRST_SECONDS
        while True:
            try:
                return await asyncio.to_thread(
                    self.writer.write,
                    segment,
                    self.packager,
                    metadata=self.metadata,
                    bytes_ingested=self.bytes_ingested,
                )
            except TRANSIENT_ERRORS as exc:
                log.warning(
                    "segment %s of session %s waits for storage (%s: %s); %d spooled",
                    segment.sequence,
                    self.grant.session_id,
                    type(exc).__name__,
                    exc,
                    self.spool.waiting,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, SINK_RETRY_MAX_SECONDS)

    async def _mirror_playlists(self) -> None:
        """Copy playlists into the bucket off the segment path, coalescing: when segments
        close faster than the bucket takes writes, only the newest state is written."""
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
                    self.grant.stream_id,
                    master=master,
                )
            except Exception:
                log.exception("playlists of stream %s not mirrored", self.grant.stream_id)
