"""One accepted publish: demuxed media into the packager, closed segments out to storage.

Protocol-neutral: the RTMP and SRT servers demux their own container (FLV, MPEG-TS) and
push access units and codec configurations here.

Packaging runs on the event loop (it is cheap). Each closed segment goes to the spool
(`ingest.spool`, a file on local disk, with what storing it takes beside it) at once, and
the publication's sink (`ingest.sink`) stores, records and announces it from there,
strictly in order, after the sink of whatever this process still stores of the session.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any

from celery import Celery
from redis import Redis

from core.settings import Settings
from core.storage import ObjectStore
from ingest import sessions
from ingest.sink import SegmentSink
from ingest.spool import Spool
from ingest.spool_record import SpoolRecord
from media.hls.segment_packager import PackagedSegment, SegmentPackager
from media.types import AccessUnit, AudioConfig, VideoConfig
from packager.source_writer import SourceWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where the media a process closed for a session ends, stored or not: a publisher
    resuming the session continues after it (`resume_after`)."""

    next_sequence: int
    timeline_end: int
    next_init_index: int
    target_duration: int | None

    @classmethod
    def after(cls, segment: PackagedSegment, target_duration: int | None) -> ResumePoint:
        return cls(segment.sequence + 1, segment.end_ticks, segment.init.index + 1, target_duration)


def resume_after(grant: sessions.PublishGrant, point: ResumePoint) -> sessions.PublishGrant:
    """The grant of a publish resuming a session whose last segments are not recorded yet:
    the database does not know them, so its numbers, timeline and init would repeat theirs."""
    return replace(
        grant,
        first_sequence=max(grant.first_sequence, point.next_sequence),
        timeline_start=max(grant.timeline_start, point.timeline_end),
        init_index=max(grant.init_index, point.next_init_index),
        target_duration=grant.target_duration or point.target_duration,
    )


class Publication:
    def __init__(
        self,
        grant: sessions.PublishGrant,
        settings: Settings,
        store: ObjectStore,
        redis: Redis,
        celery: Celery,
        spool: Spool,
        *,
        after: asyncio.Task[None] | None = None,
    ) -> None:
        """`after`: the sink this one's segments are stored after (the session's last one
        on this process, if it may still be storing)."""
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
        self.sink = SegmentSink(
            self.writer,
            settings,
            store,
            redis,
            spool,
            stream_id=grant.stream_id,
            session_id=grant.session_id,
            after=after,
        )
        # Closed segments, in memory for as long as their spool write takes.
        self._queue: asyncio.Queue[PackagedSegment | None] = asyncio.Queue()
        self._spooler = asyncio.create_task(self._spool(), name=f"spool-{grant.session_id}")
        self._last_closed: PackagedSegment | None = None
        self._closed = False

    def push(self, items: list[AccessUnit | VideoConfig | AudioConfig], received: int) -> None:
        """Package demuxed media; `received` counts the protocol payload bytes behind it."""
        self.bytes_ingested += received
        for item in items:
            if isinstance(item, AccessUnit):
                closed = self.packager.push(item)
            else:
                closed = self.packager.configure(item)
            for segment in closed:
                self._close(segment)

    def _close(self, segment: PackagedSegment) -> None:
        self._last_closed = segment
        self._queue.put_nowait(segment)

    def resume_point(self) -> ResumePoint:
        """Where this publication's media ends so far (its grant's start before any)."""
        if self._last_closed is None:
            grant = self.grant
            return ResumePoint(
                grant.first_sequence, grant.timeline_start, grant.init_index, grant.target_duration
            )
        return ResumePoint.after(self._last_closed, self.packager.target_duration)

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

    def close(self) -> None:
        """The connection is gone: close the last segment; nothing more is pushed."""
        if self._closed:
            return
        self._closed = True
        for segment in self.packager.flush():
            self._close(segment)
        self._queue.put_nowait(None)

    async def finish(self) -> None:
        """Close, and wait until everything closed is stored."""
        self.close()
        await self._spooler
        await self.sink.task

    async def _spool(self) -> None:
        while (segment := await self._queue.get()) is not None:
            gop = self.packager.segmenter.gop if self.packager.segmenter else None
            record = SpoolRecord(
                stream_id=self.grant.stream_id,
                session_id=self.grant.session_id,
                segment=replace(segment, data=b""),
                timeline_start=self.writer.timeline_start,
                wall_clock_origin=self.writer.wall_clock_origin,
                transcode=self.grant.transcode,
                metadata=dict(self.metadata),
                bytes_ingested=self.bytes_ingested,
                gop_seconds=round(gop.max_seconds, 3) if gop else None,
                target_duration=self.packager.target_duration,
            )
            entry = await asyncio.to_thread(self.spool.put, record, segment.data)
            self.sink.put(record, entry)
        self.sink.close()
