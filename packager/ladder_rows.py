"""Ladder rows in PostgreSQL: what a ladder task reads about its source segment, and the
upserts recording what it made. A task may run twice (redelivery after a lost worker), so
every write is an upsert that a second run repeats harmlessly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.models import LiveSession, Rendition, Segment
from media.ladder import DEFAULT_LADDER, SOURCE, Rung, parse_ladder, rungs_for_source
from packager.keys import media_key, segment_name
from packager.timeline import FAILED, READY


@dataclass(frozen=True, slots=True)
class SourceSegment:
    """One closed source segment, and the rungs its session's ladder gives it."""

    stream_id: uuid.UUID | None  # None: an uploaded file's session
    session_id: uuid.UUID
    sequence: int
    duration: float
    program_date_time: datetime | None
    discontinuity: bool
    object_key: str
    init_key: str
    frame_rate: float | None
    rungs: list[Rung]

    @property
    def init_name(self) -> str:
        """The source's init object name (`init_{n}.mp4`); each rung's init shares it."""
        return self.init_key.rpartition("/")[2]

    @property
    def init_index(self) -> int:
        return int(self.init_name.removeprefix("init_").removesuffix(".mp4"))

    def rung_key(self, rung: Rung, name: str) -> str:
        return media_key(self.stream_id, rung.name, self.session_id, name)


def load_source_segment(db: Session, session_id: uuid.UUID, sequence: int) -> SourceSegment | None:
    """None when the segment is gone (its session deleted since the task was queued)."""
    row = db.execute(
        select(Segment, Rendition, LiveSession)
        .join(Rendition, Segment.rendition_id == Rendition.id)
        .join(LiveSession, Rendition.session_id == LiveSession.id)
        .where(
            LiveSession.id == session_id,
            Rendition.name == SOURCE,
            Segment.sequence == sequence,
        )
    ).first()
    if row is None:
        return None
    segment, rendition, session = row
    return SourceSegment(
        stream_id=session.stream_id,
        session_id=session.id,
        sequence=segment.sequence,
        duration=segment.duration,
        program_date_time=segment.program_date_time,
        discontinuity=segment.discontinuity,
        object_key=segment.object_key,
        init_key=segment.init_key,
        frame_rate=rendition.frame_rate,
        rungs=session_rungs(session, rendition),
    )


def session_rungs(session: LiveSession, source: Rendition) -> list[Rung]:
    """The rungs the session's ladder gives its source rendition; none for audio only."""
    if not (source.width and source.height):
        return []
    ladder = parse_ladder(session.ladder) if session.ladder is not None else DEFAULT_LADDER
    return rungs_for_source(ladder, source.width, source.height)


@dataclass(frozen=True, slots=True)
class RungOutcome:
    """What a task made of one rung: `codecs` and `size_bytes` only when it succeeded."""

    rung: Rung
    codecs: str | None = None
    size_bytes: int = 0

    @property
    def status(self) -> str:
        return READY if self.codecs else FAILED


def record_rung_segment(db: Session, source: SourceSegment, outcome: RungOutcome) -> None:
    """Upsert the rung's rendition and its segment row; a failure never overwrites a success."""
    rung = outcome.rung
    init_key = source.rung_key(rung, source.init_name)
    db.execute(
        insert(Rendition)
        .values(
            session_id=source.session_id,
            name=rung.name,
            codecs="",
            width=rung.width,
            height=rung.height,
            frame_rate=source.frame_rate,
            bandwidth=0,
            average_bandwidth=0,
        )
        .on_conflict_do_nothing(index_elements=["session_id", "name"])
    )
    rendition = db.scalars(
        select(Rendition)
        .where(Rendition.session_id == source.session_id, Rendition.name == rung.name)
        .with_for_update()
    ).one()
    values = {
        "rendition_id": rendition.id,
        "sequence": source.sequence,
        "duration": source.duration,
        "program_date_time": source.program_date_time,
        "discontinuity": source.discontinuity,
        "object_key": source.rung_key(rung, segment_name(source.sequence)),
        "init_key": init_key,
        "size_bytes": outcome.size_bytes,
        "status": outcome.status,
    }
    upsert = insert(Segment).values(**values)
    if outcome.status == FAILED:
        db.execute(upsert.on_conflict_do_nothing(index_elements=["rendition_id", "sequence"]))
        return
    db.execute(
        upsert.on_conflict_do_update(index_elements=["rendition_id", "sequence"], set_=values)
    )
    rendition.codecs = outcome.codecs or ""
    rendition.init_key = init_key
    if source.duration > 0:
        peak = round(outcome.size_bytes * 8 / source.duration)
        rendition.bandwidth = max(rendition.bandwidth, peak)
    total_bytes, total_seconds = db.execute(
        select(func.sum(Segment.size_bytes), func.sum(Segment.duration)).where(
            Segment.rendition_id == rendition.id, Segment.status == READY
        )
    ).one()
    if total_seconds:
        rendition.average_bandwidth = round(total_bytes * 8 / total_seconds)
