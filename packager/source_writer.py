"""The source rendition of a session, written segment by segment: objects, rows, events.

Shared by live publishes (the ingest) and the upload job (a worker), so both record their
source segments the same way, and each queues the ladder for what it wrote.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery
from redis import Redis, RedisError
from sqlalchemy import func, select, update

from core.db import session_scope
from core.models import LiveSession, Rendition, Segment
from core.settings import Settings
from core.storage import ObjectStore
from media.hls.segment_packager import InitSegment, PackagedSegment, SegmentPackager
from media.ladder import SOURCE
from media.source_info import describe_source, video_frame_rate
from media.types import CLOCK_HZ
from packager import ladder_outbox
from packager.enqueue import ladder_queue
from packager.keys import init_name, media_key, segment_name
from packager.mirror import announce_segment

log = logging.getLogger(__name__)

STORE_ATTEMPTS = 4


class SourceWriter:
    """Stores, records and announces the source segments of one session, one at a time.

    Shared by live publishes and the upload job (synchronous: keep it off the event loop):
    the objects, the rows (with the segment's ladder work, in the same transaction: see
    `packager.ladder_outbox`), the ladder task sent, and the stream's `segment` event (an
    upload session has no stream; its job reports progress instead).
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
        # Where its ladder work goes; None: the session's ladder is the source only.
        self.ladder_queue = ladder_queue(stream_id) if transcode else None
        self.wall_clock_origin = datetime.now(UTC)
        self._rendition_id: int | None = None
        self._stored_inits: set[int] = set()

    def write(
        self,
        segment: PackagedSegment,
        packager: SegmentPackager,
        *,
        metadata: dict[str, Any],
        bytes_ingested: int,
    ) -> bool:
        """Store, record and announce one segment; True for the session's first one."""
        started = time.perf_counter()
        init_key = self._store_init(segment.init)
        key = media_key(self.stream_id, SOURCE, self.session_id, segment_name(segment.sequence))
        _retry(lambda: self.store.put_bytes(key, segment.data, "video/iso.segment"))
        first = self._rendition_id is None
        if first:
            self._rendition_id = self.ensure_rendition(segment.init, metadata)
        offset = segment.start_ticks - self.timeline_start
        program_date_time = self.wall_clock_origin + timedelta(seconds=offset / CLOCK_HZ)
        gop = packager.segmenter.gop if packager.segmenter else None
        queued = _retry(
            lambda: record_segment(
                self.settings.database_url,
                self.session_id,
                SegmentRecord(
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
                ladder_queue=self.ladder_queue,
            )
        )
        if queued:
            ladder_outbox.relay(
                self.celery, self.settings.database_url, self.session_id, segment.sequence, queued
            )
        if self.stream_id is not None:
            self._announce(segment, program_date_time)
        log.debug(
            "segment %s stored in %.1f ms", segment.sequence, (time.perf_counter() - started) * 1000
        )
        return first

    def _announce(self, segment: PackagedSegment, program_date_time: datetime) -> None:
        """A hint for listeners, who resync from REST: a Redis outage must not cost the
        segment, which is stored and recorded by now."""
        try:
            announce_segment(
                self.redis,
                self.stream_id,
                self.session_id,
                SOURCE,
                segment.sequence,
                segment.duration,
                program_date_time,
            )
        except RedisError as exc:
            log.warning("segment %s not announced: %s", segment.sequence, exc)

    def _store_init(self, init: InitSegment) -> str:
        key = media_key(self.stream_id, SOURCE, self.session_id, init_name(init.index))
        if init.index not in self._stored_inits:
            _retry(lambda: self.store.put_bytes(key, init.data, "video/mp4"))
            self._stored_inits.add(init.index)
        return key

    def ensure_rendition(self, init: InitSegment, metadata: dict[str, Any]) -> int:
        """The session's source rendition row (made, or updated): before the first segment,
        or ahead of writers that would otherwise race to create it (an upload's chunks)."""
        video = init.video
        return ensure_source_rendition(
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


def ensure_source_rendition(
    database_url: str,
    session_id: uuid.UUID,
    *,
    codecs: str,
    width: int | None,
    height: int | None,
    frame_rate: float | None,
    media_info: dict[str, Any],
) -> int:
    with session_scope(database_url) as db:
        rendition = db.scalars(
            select(Rendition).where(Rendition.session_id == session_id, Rendition.name == SOURCE)
        ).first()
        if rendition is None:
            rendition = Rendition(session_id=session_id, name=SOURCE, codecs=codecs)
            db.add(rendition)
        rendition.codecs = codecs
        rendition.width, rendition.height, rendition.frame_rate = width, height, frame_rate
        # Locked: the ingest report (`record_ingest_report`) merges into media_info too.
        session = db.get(LiveSession, session_id, with_for_update=True)
        session.media_info = {**(session.media_info or {}), **media_info}
        db.flush()
        return rendition.id


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    rendition_id: int
    sequence: int
    duration: float
    program_date_time: datetime
    discontinuity: bool
    object_key: str
    init_key: str
    size_bytes: int


def record_segment(
    database_url: str,
    session_id: uuid.UUID,
    segment: SegmentRecord,
    *,
    bandwidth: int,
    average_bandwidth: int,
    gop_seconds: float | None,
    bytes_ingested: int,
    ladder_queue: str | None,
) -> str | None:
    """The segment's row, and its ladder work on `ladder_queue` (None: no ladder) in the same
    transaction. Returns the queue the work went to, None when there is none (the session's
    ladder gives this source no rung)."""
    with session_scope(database_url) as db:
        db.add(
            row := Segment(
                rendition_id=segment.rendition_id,
                sequence=segment.sequence,
                duration=segment.duration,
                program_date_time=segment.program_date_time,
                discontinuity=segment.discontinuity,
                object_key=segment.object_key,
                init_key=segment.init_key,
                size_bytes=segment.size_bytes,
            )
        )
        db.flush()
        queued = ladder_queue and ladder_outbox.add_job(db, session_id, row, ladder_queue)
        db.execute(
            update(Rendition)
            .where(Rendition.id == segment.rendition_id)
            .values(
                bandwidth=func.greatest(Rendition.bandwidth, bandwidth),
                average_bandwidth=average_bandwidth,
            )
        )
        values: dict[str, Any] = {
            "bytes_ingested": bytes_ingested,
            "heartbeat_at": datetime.now(UTC),
        }
        if gop_seconds is not None:
            values["gop_seconds"] = func.greatest(
                func.coalesce(LiveSession.gop_seconds, 0), gop_seconds
            )
        db.execute(update(LiveSession).where(LiveSession.id == session_id).values(**values))
    return ladder_queue if queued else None
