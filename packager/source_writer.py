"""The source rendition of a session, written segment by segment: objects, rows, events.

Shared by live publishes (the ingest) and the upload job (a worker), so both record their
source segments the same way, and each queues the ladder for what it wrote.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from celery import Celery
from redis import Redis, RedisError
from sqlalchemy import func, select, update

from core.db import session_scope
from core.delivery import INIT_TYPE, MEDIA_CACHE, SEGMENT_TYPE
from core.models import LiveSession, Rendition, Segment, Stream
from core.retry import retry
from core.settings import Settings
from core.storage import ObjectStore
from media.hls.segment_packager import InitSegment, PackagedSegment, SegmentPackager
from media.ladder import SOURCE
from media.source_info import describe_source, video_frame_rate
from media.types import CLOCK_HZ
from packager import ladder_outbox, timeline
from packager.enqueue import ladder_queue
from packager.keys import init_name, media_key, segment_name
from packager.ladder_rows import VariantPolicy, plan_ladder
from packager.mirror import announce_segment
from packager.variant_rates import record_segment_rate

log = logging.getLogger(__name__)

T = TypeVar("T")

# Between tries of a write: 0.2 s, doubling, at most 2 s (a live segment cannot wait long).
STORE_RETRY_DELAY_SECONDS = 0.2
STORE_RETRY_MAX_DELAY_SECONDS = 2.0


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
        wall_clock_origin: datetime | None = None,
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
        # Where `timeline_start` is on the wall clock (now, unless a replay of segments
        # made earlier says when).
        self.wall_clock_origin = wall_clock_origin or datetime.now(UTC)
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
        gop = packager.segmenter.gop if packager.segmenter else None
        return self.store_segment(
            segment,
            gop_seconds=round(gop.max_seconds, 3) if gop else None,
            target_duration=packager.target_duration,
            metadata=metadata,
            bytes_ingested=bytes_ingested,
        )

    def store_segment(
        self,
        segment: PackagedSegment,
        *,
        gop_seconds: float | None,
        target_duration: int | None,
        metadata: dict[str, Any],
        bytes_ingested: int,
    ) -> bool:
        """`write` with what it takes from the packager given: the longest GOP so far and
        the target duration in force (a spooled segment keeps them beside its bytes)."""
        started = time.perf_counter()
        sequence = self._place(segment)
        init_key = self._store_init(segment.init)
        key = media_key(self.stream_id, SOURCE, self.session_id, segment_name(sequence))
        self._retry(
            lambda: self.store.put_bytes(key, segment.data, SEGMENT_TYPE, cache_control=MEDIA_CACHE)
        )
        first = self._rendition_id is None
        if first:
            self._rendition_id = self.ensure_rendition(segment.init, metadata, segment)
        offset = segment.start_ticks - self.timeline_start
        program_date_time = self.wall_clock_origin + timedelta(seconds=offset / CLOCK_HZ)
        queued = self._retry(
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
                policy=VariantPolicy.from_settings(self.settings),
                plan=first,
                gop_seconds=gop_seconds,
                bytes_ingested=bytes_ingested,
                open_gop=not segment.independent,
                ladder_queue=self.ladder_queue,
                # An upload's session is a recording only: its chunks have no common first.
                target_duration=target_duration if self.stream_id else None,
            )
        )
        if queued:
            ladder_outbox.relay(
                self.celery, self.settings.database_url, self.session_id, sequence, queued
            )
        if self.stream_id is not None:
            self._announce(sequence, segment, program_date_time)
        log.debug("segment %s stored in %.1f ms", sequence, (time.perf_counter() - started) * 1000)
        return first

    def _announce(
        self, sequence: int, segment: PackagedSegment, program_date_time: datetime
    ) -> None:
        """A hint for listeners, who resync from REST: a Redis outage must not cost the
        segment, which is stored and recorded by now."""
        try:
            announce_segment(
                self.redis,
                self.stream_id,
                self.session_id,
                SOURCE,
                sequence,
                segment.duration,
                program_date_time,
            )
        except RedisError as exc:
            log.warning("segment %s not announced: %s", sequence, exc)

    def _place(self, segment: PackagedSegment) -> int:
        """The segment's number on its stream's timeline. A live connection's first segment
        claims the next one (gaps may have been added since the publish was granted), and
        its date starts no earlier than where the timeline ends; the rest follow it. An
        upload's segments keep the numbers their job planned."""
        if self.stream_id is None:
            return segment.sequence
        if self._sequence_offset is None:
            place = self._retry(
                lambda: claim(self.settings.database_url, self.stream_id, self.session_id)
            )
            self._sequence_offset = place.sequence - segment.sequence
            if place.not_before is not None:
                self.wall_clock_origin = max(self.wall_clock_origin, place.not_before)
        return segment.sequence + self._sequence_offset

    def _store_init(self, init: InitSegment) -> str:
        key = media_key(self.stream_id, SOURCE, self.session_id, init_name(init.index))
        if init.index not in self._stored_inits:
            self._retry(
                lambda: self.store.put_bytes(key, init.data, INIT_TYPE, cache_control=MEDIA_CACHE)
            )
            self._stored_inits.add(init.index)
        return key

    def _retry(self, write: Callable[[], T]) -> T:
        """Storage and database hiccups are retried with backoff before a segment is given
        up; anything else (a bug) is raised at once."""
        return retry(
            write,
            attempts=self.settings.store_attempts,
            base_delay=STORE_RETRY_DELAY_SECONDS,
            max_delay=STORE_RETRY_MAX_DELAY_SECONDS,
        )

    def ensure_rendition(
        self,
        init: InitSegment,
        metadata: dict[str, Any],
        first_segment: PackagedSegment | None = None,
    ) -> int:
        """The session's source rendition row (made, or updated): before the first segment,
        or ahead of writers that would otherwise race to create it (an upload's chunks).
        The first segment's frames over its duration give the frame rate when neither the
        SPS nor the publisher does."""
        video = init.video
        counted = first_segment.frame_rate if first_segment else None
        return ensure_source_rendition(
            self.settings.database_url,
            self.session_id,
            codecs=init.codecs,
            width=video.width if video else None,
            height=video.height if video else None,
            frame_rate=video_frame_rate(video, metadata, counted) if video else None,
            media_info=describe_source(video, init.audio, metadata, counted),
        )


def claim(database_url: str, stream_id: uuid.UUID, session_id: uuid.UUID) -> timeline.Place:
    with session_scope(database_url) as db:
        return timeline.claim_place(db, stream_id, session_id)


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
    policy: VariantPolicy,
    plan: bool,
    gop_seconds: float | None,
    bytes_ingested: int,
    open_gop: bool = False,
    ladder_queue: str | None = None,
    target_duration: int | None = None,
) -> str | None:
    """The segment's row and its count in the source's bandwidths; with `plan` (a writer's
    first segment) also the session's ladder, in the same transaction, so the first master
    that can be served (the source has media) already lists every rung. Its ladder work goes
    on `ladder_queue` (None: no ladder) in the same transaction too. `target_duration` is
    the presentation's, kept by the session and its stream from the first segment on.
    Returns the queue the work went to, None when there is none (no rung for this source)."""
    with session_scope(database_url) as db:
        # Locked: an upload's chunks record segments of one rendition concurrently.
        rendition = db.get(Rendition, segment.rendition_id, with_for_update=True)
        db.add(row := Segment(**asdict(segment)))  # a SegmentRecord holds the row's columns
        db.flush()
        record_segment_rate(
            db,
            rendition,
            segment.sequence,
            added_bytes=segment.size_bytes,
            added_seconds=segment.duration,
            target_seconds=policy.target_seconds,
        )
        queued = ladder_queue and ladder_outbox.add_job(db, session_id, row, ladder_queue)
        if plan:
            plan_ladder(db, db.get(LiveSession, session_id), rendition, policy)
        values: dict[str, Any] = {
            "bytes_ingested": bytes_ingested,
            "heartbeat_at": datetime.now(UTC),
        }
        if gop_seconds is not None:
            values["gop_seconds"] = func.greatest(
                func.coalesce(LiveSession.gop_seconds, 0), gop_seconds
            )
        if open_gop:  # once seen, the session's playlists stop claiming independence
            values["open_gop"] = True
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
    return ladder_queue if queued else None
