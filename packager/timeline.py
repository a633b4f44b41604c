"""A stream's timeline in rows: one source segment row per sequence number, media or gap.

Sequence numbers belong to the stream, not to a session: a session continues the numbers
of the one before it, and the ladder's rungs reuse the source's numbers. The source
rendition of each session therefore carries the timeline. A row with status `gap` stands
for time when no publisher was on the stream, so the stream's playlists kept advancing
(RFC 8216bis 6.2.1: a live playlist gets a new segment at least every 1.5 target
durations); it has no object. Every rendition's playlist maps each sequence number of the
timeline to its own segment there, or to EXT-X-GAP where it has none.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from core.models import LiveSession, Rendition, Segment, SegmentStatus, Stream
from media.ladder import SOURCE
from packager.keys import media_key, segment_name


def stream_source_rows(stream_id: uuid.UUID) -> Select[tuple[Segment]]:
    """Every timeline row of a stream (the source segments of all its sessions)."""
    return (
        select(Segment)
        .join(Rendition, Segment.rendition_id == Rendition.id)
        .join(LiveSession, Rendition.session_id == LiveSession.id)
        .where(LiveSession.stream_id == stream_id, Rendition.name == SOURCE)
    )


def last_row(db: Session, stream_id: uuid.UUID) -> Segment | None:
    """The stream's latest timeline row, media or gap."""
    return db.scalars(
        stream_source_rows(stream_id).order_by(Segment.sequence.desc()).limit(1)
    ).first()


def next_sequence(db: Session, stream_id: uuid.UUID) -> int:
    """The sequence number the stream's next segment takes, whichever session makes it."""
    last = last_row(db, stream_id)
    return 0 if last is None else last.sequence + 1


def row_end(row: Segment) -> datetime | None:
    """Where a row ends on the wall clock (its program date time plus its duration)."""
    if row.program_date_time is None:
        return None
    return row.program_date_time + timedelta(seconds=row.duration)


def presentation_last_session(db: Session, stream: Stream) -> LiveSession | None:
    """The latest session of the stream's current presentation."""
    return db.scalars(
        select(LiveSession)
        .where(
            LiveSession.stream_id == stream.id,
            LiveSession.presentation_sequence == stream.presentation_sequence,
        )
        .order_by(LiveSession.started_at.desc())
        .limit(1)
    ).first()


@dataclass(frozen=True, slots=True)
class Place:
    """Where a connection's first segment goes on its stream's timeline."""

    sequence: int
    not_before: datetime | None  # the timeline's end on the wall clock


def claim_place(db: Session, stream_id: uuid.UUID, session_id: uuid.UUID) -> Place:
    """Take the next place on the stream's timeline for a connection's first segment, and
    mark its session fed, so the outage sweep adds no gap there. Until this moment the
    sweep may have added gaps since the publish was granted; the stream row's lock orders
    the two. The caller commits before storing anything under the number."""
    db.scalars(select(Stream).where(Stream.id == stream_id).with_for_update()).one()
    last = last_row(db, stream_id)
    db.execute(update(LiveSession).where(LiveSession.id == session_id).values(fed_at=func.now()))
    if last is None:
        return Place(0, None)
    return Place(last.sequence + 1, row_end(last))


def gaps_due(
    db: Session, stream_id: uuid.UUID, first_sequence: int, target_duration: int, until: datetime
) -> list[Segment]:
    """Add the gap rows the stream's presentation (from `first_sequence` on) owes up to
    `until`, at the cadence segments came: the k-th gap after the timeline's last media row
    is due (k - 1/2) target durations after that row was written. Counted from the media,
    not from the gap before, late sweeps do not add up (a playlist that fell behind the
    clock would let a player at the live edge play its buffer empty); half a target early
    leaves a whole one for the sweep, the render and a player's reload within RFC 8216bis
    6.2.1's 1.5. Program date times cannot set the pace: a publisher that sent faster than
    real time has them ahead of the clock.

    Each gap is dated where the row before it ends and goes into the session of the last
    row, whose init stays the one in force. The caller holds the stream row's lock, so the
    next publish numbers after them. A presentation without a segment yet owes none."""
    last = last_row(db, stream_id)
    end = row_end(last) if last is not None else None
    if last is None or end is None or last.sequence < first_sequence:
        return []
    media = db.scalars(
        stream_source_rows(stream_id)
        .where(Segment.status != SegmentStatus.GAP)
        .order_by(Segment.sequence.desc())
        .limit(1)
    ).first()
    if media is None or media.sequence < first_sequence:
        return []
    step = timedelta(seconds=target_duration)
    session_id = db.scalar(select(Rendition.session_id).where(Rendition.id == last.rendition_id))
    owed = int((until - media.created_at) / step + 0.5) - (last.sequence - media.sequence)
    gaps = [
        Segment(
            rendition_id=last.rendition_id,
            sequence=last.sequence + k,
            duration=float(target_duration),
            program_date_time=end + step * (k - 1),
            # An outage is listed as a slate of its own (`packager.slate_uris`): the
            # first gap after media starts a discontinuity, as the media after it does.
            discontinuity=k == 1 and last.sequence == media.sequence,
            object_key=media_key(stream_id, SOURCE, session_id, segment_name(last.sequence + k)),
            init_key=last.init_key,
            size_bytes=0,
            status=SegmentStatus.GAP,
        )
        for k in range(1, owed + 1)
    ]
    db.add_all(gaps)
    return gaps
