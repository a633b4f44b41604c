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
from redis import Redis
from sqlalchemy import func, select, update

from core.db import session_scope
from core.models import LiveSession, Rendition, Segment, Stream
from core.settings import Settings
from core.storage import ObjectStore
from media.hls.segment_packager import InitSegment, PackagedSegment, SegmentPackager
from media.ladder import SOURCE
from media.source_info import describe_source, video_frame_rate
from media.types import CLOCK_HZ
from packager import timeline
from packager.enqueue import enqueue_ladder
from packager.keys import init_name, media_key, segment_name
from packager.mirror import announce_segment

log = logging.getLogger(__name__)

STORE_ATTEMPTS = 4


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
        self._sequence_offset: int | None = None  # the stream's numbers minus the packager's
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
        sequence = self._place(segment)
        init_key = self._store_init(segment.init)
        key = media_key(self.stream_id, SOURCE, self.session_id, segment_name(sequence))
        _retry(lambda: self.store.put_bytes(key, segment.data, "video/iso.segment"))
        first = self._rendition_id is None
        if first:
            self._rendition_id = self.ensure_rendition(segment.init, metadata)
        offset = segment.start_ticks - self.timeline_start
        program_date_time = self.wall_clock_origin + timedelta(seconds=offset / CLOCK_HZ)
        gop = packager.segmenter.gop if packager.segmenter else None
        _retry(
            lambda: record_segment(
                self.settings.database_url,
                self.session_id,
                SegmentRecord(
                    rendition_id=self._rendition_id,
                    sequence=sequence,
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
                # An upload's session is a recording only: its chunks have no common first.
                target_duration=packager.target_duration if self.stream_id else None,
            )
        )
        self._enqueue_ladder(sequence)
        if self.stream_id is not None:
            announce_segment(
                self.redis,
                self.stream_id,
                self.session_id,
                SOURCE,
                sequence,
                segment.duration,
                program_date_time,
            )
        log.debug("segment %s stored in %.1f ms", sequence, (time.perf_counter() - started) * 1000)
        return first

    def _place(self, segment: PackagedSegment) -> int:
        """The segment's number on its stream's timeline. A live connection's first segment
        claims the next one (gaps may have been added since the publish was granted), and
        its date starts no earlier than where the timeline ends; the rest follow it. An
        upload's segments keep the numbers their job planned."""
        if self.stream_id is None:
            return segment.sequence
        if self._sequence_offset is None:
            place = _retry(
                lambda: claim(self.settings.database_url, self.stream_id, self.session_id)
            )
            self._sequence_offset = place.sequence - segment.sequence
            if place.not_before is not None:
                self.wall_clock_origin = max(self.wall_clock_origin, place.not_before)
        return segment.sequence + self._sequence_offset

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


def claim(database_url: str, stream_id: uuid.UUID, session_id: uuid.UUID) -> timeline.Place:
    with session_scope(database_url) as db:
        return timeline.claim_place(db, stream_id, session_id)


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
    target_duration: int | None = None,
) -> None:
    """One source segment's row and what it tells about its session; `target_duration` is
    the presentation's, kept by the session and its stream from the first segment on."""
    with session_scope(database_url) as db:
        db.add(
            Segment(
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
        if target_duration is not None:
            values["target_duration"] = func.coalesce(LiveSession.target_duration, target_duration)
            # Once set it matches no row, so later segments take no lock on the stream.
            session = select(LiveSession).where(LiveSession.id == session_id).subquery()
            db.execute(
                update(Stream)
                .where(
                    Stream.id == session.c.stream_id,
                    Stream.presentation_sequence == session.c.presentation_sequence,
                    Stream.target_duration.is_(None),
                )
                .values(target_duration=target_duration)
            )
        db.execute(update(LiveSession).where(LiveSession.id == session_id).values(**values))
