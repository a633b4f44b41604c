"""Database schema: PostgreSQL is the source of truth for streams, sessions and segments.

Schema changes go through Alembic migrations in `core/migrations/`; these classes mirror them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
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
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

STREAM_STATUSES = ("idle", "live", "disabled")
SESSION_STATUSES = ("live", "ended", "failed")
SEGMENT_STATUSES = ("ready", "failed", "gap")  # gap: no publisher, on the timeline only
UPLOAD_STATUSES = ("processing", "ready", "failed")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class Stream(Base):
    __tablename__ = "streams"
    __table_args__ = (CheckConstraint(_in("status", STREAM_STATUSES), name="stream_status"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    stream_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="idle")
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
    __table_args__ = (CheckConstraint(_in("status", SESSION_STATUSES), name="session_status"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    stream_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("streams.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="live")
    protocol: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disconnected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Refreshed by the ingest holding the publisher; a stale one means that process died.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the current connection's first segment took its place on the stream's timeline;
    # null until then, while the outage sweep keeps the stream's playlists advancing.
    fed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    media_info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The stream's ladder when the session started (null: the default ladder), so editing
    # a stream never changes the rungs of a session in progress.
    ladder: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    gop_seconds: Mapped[float | None] = mapped_column(Float)
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

    session: Mapped[LiveSession] = relationship(back_populates="renditions")
    segments: Mapped[list[Segment]] = relationship(
        back_populates="rendition", cascade="all, delete-orphan", passive_deletes=True
    )


class Segment(Base):
    __tablename__ = "segments"
    __table_args__ = (
        UniqueConstraint("rendition_id", "sequence"),
        CheckConstraint(_in("status", SEGMENT_STATUSES), name="segment_status"),
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
    status: Mapped[str] = mapped_column(String(16), default="ready")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    rendition: Mapped[Rendition] = relationship(back_populates="segments")


class Upload(Base):
    """One uploaded file, processed into the recording of its session (`stream_id` null)."""

    __tablename__ = "uploads"
    __table_args__ = (CheckConstraint(_in("status", UPLOAD_STATUSES), name="upload_status"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), default="processing")
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
