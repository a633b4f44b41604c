"""One accepted publish: demuxed media into the packager, closed segments out to storage.

Protocol-neutral: the RTMP and SRT servers demux their own container (FLV, MPEG-TS) and
push access units and codec configurations here.

Packaging runs on the event loop (it is cheap); each closed segment is handed to a sink task
that stores it, records it and announces it, strictly in order, off the loop in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery
from redis import Redis

from core.settings import Settings
from core.storage import ObjectStore
from ingest import sessions
from ingest.media_info import describe_source, video_frame_rate
from packager import catalog
from packager.catalog import SOURCE
from packager.live import InitSegment, LivePackager, PackagedSegment
from packager.media import CLOCK_HZ, AccessUnit, AudioConfig, VideoConfig
from packager.mirror import announce_segment, write_playlists
from packager.tasks import enqueue_ladder

log = logging.getLogger(__name__)

STORE_ATTEMPTS = 4


class Publication:
    def __init__(
        self,
        grant: sessions.PublishGrant,
        settings: Settings,
        store: ObjectStore,
        redis: Redis,
        celery: Celery,
    ) -> None:
        self.grant = grant
        self.settings = settings
        self.store = store
        self.redis = redis
        self.packager = LivePackager(
            settings.segment_seconds,
            first_sequence=grant.first_sequence,
            timeline_start=grant.timeline_start,
            init_index=grant.init_index,
            discontinuity=grant.resumed,
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
        self._queue: asyncio.Queue[PackagedSegment | None] = asyncio.Queue()
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

    async def finish(self) -> None:
        """Close the last segment and wait until everything closed so far is stored."""
        for segment in self.packager.flush():
            self._queue.put_nowait(segment)
        self._queue.put_nowait(None)
        await self._sink
        self._closing = True
        self._mirror_wanted.set()
        await self._mirror

    async def _drain(self) -> None:
        while (segment := await self._queue.get()) is not None:
            try:
                first = await asyncio.to_thread(
                    self.writer.write,
                    segment,
                    self.packager,
                    metadata=self.metadata,
                    bytes_ingested=self.bytes_ingested,
                )
                self._mirror_master |= first
                self._mirror_pending = True
                self._mirror_wanted.set()
            except Exception:
                log.exception(
                    "segment %s of session %s was lost", segment.sequence, self.grant.session_id
                )

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


class SourceWriter:
    """Stores, records and announces the source segments of one session, one at a time.

    Shared by live publishes and the upload job (synchronous: keep it off the event loop):
    the objects, the rows, one ladder task per segment, and the stream's `segment` event
    (an upload session has no stream; its job reports progress instead).
    """

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        redis: Redis,
        celery: Celery,
        *,
        stream_id: uuid.UUID | None,
        session_id: uuid.UUID,
        timeline_start: int,
        transcode: bool,
    ) -> None:
        self.settings = settings
        self.store = store
        self.redis = redis
        self.celery = celery
        self.stream_id = stream_id
        self.session_id = session_id
        self.timeline_start = timeline_start
        self.transcode = transcode
        self.wall_clock_origin = datetime.now(UTC)
        self._rendition_id: int | None = None
        self._stored_inits: set[int] = set()

    def write(
        self,
        segment: PackagedSegment,
        packager: LivePackager,
        *,
        metadata: dict[str, Any],
        bytes_ingested: int,
    ) -> bool:
        """Store, record and announce one segment; True for the session's first one."""
        started = time.perf_counter()
        init_key = self._store_init(segment.init)
        key = catalog.media_key(
            self.stream_id, SOURCE, self.session_id, catalog.segment_name(segment.sequence)
        )
        _retry(lambda: self.store.put_bytes(key, segment.data, "video/iso.segment"))
        first = self._rendition_id is None
        if first:
            self._rendition_id = self.ensure_rendition(segment.init, metadata)
        offset = segment.start_ticks - self.timeline_start
        program_date_time = self.wall_clock_origin + timedelta(seconds=offset / CLOCK_HZ)
        gop = packager.segmenter.gop if packager.segmenter else None
        _retry(
            lambda: sessions.record_segment(
                self.settings.database_url,
                self.session_id,
                sessions.SegmentRecord(
                    rendition_id=self._rendition_id,
                    sequence=segment.sequence,
                    duration=round(segment.duration, 6),
                    program_date_time=program_date_time,
                    discontinuity=segment.discontinuity,
                    object_key=key,
                    init_key=init_key,
                    size_bytes=len(segment.data),
                ),
                bandwidth=packager.bitrate.peak,
                average_bandwidth=packager.bitrate.average,
                gop_seconds=round(gop.max_seconds, 3) if gop else None,
                bytes_ingested=bytes_ingested,
            )
        )
        self._enqueue_ladder(segment.sequence)
        if self.stream_id is not None:
            announce_segment(
                self.redis,
                self.stream_id,
                self.session_id,
                SOURCE,
                segment.sequence,
                segment.duration,
                program_date_time,
            )
        log.debug(
            "segment %s stored in %.1f ms", segment.sequence, (time.perf_counter() - started) * 1000
        )
        return first

    def _enqueue_ladder(self, sequence: int) -> None:
        """Workers transcode the rungs; a lost enqueue costs only that segment's rungs."""
        if not self.transcode:
            return
        try:
            enqueue_ladder(self.celery, self.session_id, sequence)
        except Exception:
            log.exception(
                "ladder of segment %s of session %s not enqueued", sequence, self.session_id
            )

    def _store_init(self, init: InitSegment) -> str:
        key = catalog.media_key(
            self.stream_id, SOURCE, self.session_id, catalog.init_name(init.index)
        )
        if init.index not in self._stored_inits:
            _retry(lambda: self.store.put_bytes(key, init.data, "video/mp4"))
            self._stored_inits.add(init.index)
        return key

    def ensure_rendition(self, init: InitSegment, metadata: dict[str, Any]) -> int:
        """The session's source rendition row (made, or updated): before the first segment,
        or ahead of writers that would otherwise race to create it (an upload's chunks)."""
        video = init.video
        return sessions.ensure_source_rendition(
            self.settings.database_url,
            self.session_id,
            codecs=init.codecs,
            width=video.width if video else None,
            height=video.height if video else None,
            frame_rate=video_frame_rate(video, metadata) if video else None,
            media_info=describe_source(video, init.audio, metadata),
        )


def _retry(action: Any) -> Any:
    """Storage and database hiccups are retried with backoff before a segment is given up."""
    for attempt in range(STORE_ATTEMPTS):
        try:
            return action()
        except Exception:
            if attempt == STORE_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    return None
