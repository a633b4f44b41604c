"""Database schema: PostgreSQL is the source of truth for streams, sessions and segments.

Schema changes go through Alembic migrations in `core/migrations/`; these classes mirror them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# The values of each `status` column. They are the strings the API and the events show and
# the CHECK constraints allow; the order is the constraints' (migration 0001), so a new value
# goes at the end, with a migration.


class StreamStatus(StrEnum):
    IDLE = "idle"
    LIVE = "live"  # a session of the stream is live (or within its reconnect grace)
    DISABLED = "disabled"  # publishes are refused


class SessionStatus(StrEnum):
    LIVE = "live"
    ENDED = "ended"
    FAILED = "failed"  # an upload's session whose processing failed


class SegmentStatus(StrEnum):
    READY = "ready"
    FAILED = "failed"  # a rung segment that could not be made: EXT-X-GAP in its playlist
    GAP = "gap"  # no publisher fed the presentation: on the stream's timeline only


class UploadStatus(StrEnum):
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


def _in(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class Stream(Base):
    __tablename__ = "streams"
    __table_args__ = (CheckConstraint(_in("status", StreamStatus), name="stream_status"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    stream_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=StreamStatus.IDLE)
    ladder: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    # The stream URL's live presentation, which sessions join until its playlists end: its
    # first sequence number, its target duration (fixed by its first segment) and when its
    # playlists got EXT-X-ENDLIST (null while a publisher may still join it).
    presentation_sequence: Mapped[int | None] = mapped_column(Integer)
    target_duration: Mapped[int | None] = mapped_column(Integer)
    presentation_ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    sessions: Mapped[list[LiveSession]] = relationship(
        back_populates="stream", cascade="all, delete-orphan", passive_deletes=True
    )


class LiveSession(Base):
    """One publish of a stream (or one uploaded file): what viewers play as a recording."""

    __tablename__ = "sessions"
    __table_args__ = (CheckConstraint(_in("status", SessionStatus), name="session_status"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    stream_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("streams.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default=SessionStatus.LIVE)
    protocol: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disconnected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Refreshed by the ingest holding the publisher; a stale one means that process died.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # That ingest process (`ingest.holder`): one on its host can tell sooner that it died.
    holder: Mapped[str | None] = mapped_column(String(200))
    # When the current connection's first segment took its place on the stream's timeline;
    # null until then, while the outage sweep keeps the stream's playlists advancing.
    fed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    media_info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The stream's ladder when the session started (null: the default ladder), so editing
    # a stream never changes the rungs of a session in progress.
    ladder: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    gop_seconds: Mapped[float | None] = mapped_column(Float)
    # A source segment started on an open-GOP picture that needs the one before it (HEVC
    # CRA with RASL): its playlists may not claim EXT-X-INDEPENDENT-SEGMENTS.
    open_gop: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The stream presentation this session belongs to (its first sequence number), and the
    # target duration of the session's own recording: the presentation's.
    presentation_sequence: Mapped[int | None] = mapped_column(Integer)
    target_duration: Mapped[int | None] = mapped_column(Integer)
    bytes_ingested: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text)

    stream: Mapped[Stream | None] = relationship(back_populates="sessions")
    renditions: Mapped[list[Rendition]] = relationship(
        back_populates="session", cascade="all, delete-orphan", passive_deletes=True
    )


class Rendition(Base):
    __tablename__ = "renditions"
    __table_args__ = (UniqueConstraint("session_id", "name"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(32))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    frame_rate: Mapped[float | None] = mapped_column(Float)
    codecs: Mapped[str] = mapped_column(String(100))
    bandwidth: Mapped[int] = mapped_column(Integer, default=0)
    average_bandwidth: Mapped[int] = mapped_column(Integer, default=0)
    init_key: Mapped[str | None] = mapped_column(String(500))
    # Its place in the master, fixed when the session's ladder is planned (null: not yet).
    position: Mapped[int | None] = mapped_column(Integer)
    # Running totals of its ready segments: AVERAGE-BANDWIDTH without summing the session.
    media_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    media_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # Raised by the database (migration 0008's triggers) in every statement that writes the
    # rendition's segments: rendered playlists are kept under it (`packager.playlist_versions`).
    revision: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    session: Mapped[LiveSession] = relationship(back_populates="renditions")
    segments: Mapped[list[Segment]] = relationship(
        back_populates="rendition", cascade="all, delete-orphan", passive_deletes=True
    )


class Segment(Base):
    __tablename__ = "segments"
    __table_args__ = (
        UniqueConstraint("rendition_id", "sequence"),
        CheckConstraint(_in("status", SegmentStatus), name="segment_status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    rendition_id: Mapped[int] = mapped_column(ForeignKey("renditions.id", ondelete="CASCADE"))
    sequence: Mapped[int] = mapped_column(Integer)
    duration: Mapped[float] = mapped_column(Float)
    program_date_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    discontinuity: Mapped[bool] = mapped_column(Boolean, default=False)
    object_key: Mapped[str] = mapped_column(String(500))
    # The EXT-X-MAP of this segment: a publisher reconnecting may change codec parameters.
    init_key: Mapped[str] = mapped_column(String(500))
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=SegmentStatus.READY)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # A live rung segment listed as EXT-X-GAP when it missed its deadline: a late result
    # still lands (the recording plays it), but a live playlist never takes back a GAP.
    missed_deadline: Mapped[bool] = mapped_column(Boolean, default=False)

    rendition: Mapped[Rendition] = relationship(back_populates="segments")


class Upload(Base):
    """One uploaded file, processed into the recording of its session (`stream_id` null)."""

    __tablename__ = "uploads"
    __table_args__ = (CheckConstraint(_in("status", UploadStatus), name="upload_status"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), default=UploadStatus.PROCESSING)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    object_key: Mapped[str] = mapped_column(String(500))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    session_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("sessions.id", ondelete="SET NULL"), index=True
    )
    # What the probe read from the container; the progress estimate until the source is done.
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    # Set once the job has packaged the whole source: from then on, completion is countable.
    source_segments: Mapped[int | None] = mapped_column(Integer)
    # A transcoded source is packaged in chunks by separate tasks: how many were queued, and
    # those done, by index: `{"0": {"segments": 10, "worker": "host:pid"}}`.
    chunk_count: Mapped[int | None] = mapped_column(Integer)
    chunks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LadderJob(Base):
    """The ladder work of one closed source segment, until a worker has recorded its rungs.

    A transactional outbox: the row is written in the transaction that records the source
    segment, so no segment exists without its ladder work, whatever the broker is doing.
    It is then sent to Celery (`sent_at`), leased by the worker running it (`lease_*`,
    renewed while it runs, so a dead worker's work is sent again once the lease runs out),
    and deleted with the rung rows it made.
    """

    __tablename__ = "ladder_outbox"
    __table_args__ = (UniqueConstraint("session_id", "sequence"),)

    segment_id: Mapped[int] = mapped_column(
        ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True
    )
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    sequence: Mapped[int] = mapped_column(Integer)
    # The Celery queue: live sessions' work has its own, which uploads cannot hold up.
    queue: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sends: Mapped[int] = mapped_column(Integer, default=0)
    # The Celery task id holding the lease (a redelivery of the same message may take it
    # back at once), and the worker running it.
    lease_task: Mapped[str | None] = mapped_column(String(64))
    lease_worker: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the deadline sweep listed the missing rung segments as gaps (live work only).
    gapped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
