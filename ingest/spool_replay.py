"""Segments a stopped or killed ingest left in its spool, stored by the ingest started again.

Every spooled segment carries its `SpoolRecord`, so the next process on the same data dir
can store and record it without the one that made it (`Publisher.start_replays` runs one
replay per session, in the background). Leftovers go into their session's recording in
their order, after what the session already has, and only while that is still their
place: the session must be live and nobody may hold it. The dead process held it until it
died, so its heartbeat stops; once that heartbeat is a stale period old
(`sessions.HEARTBEAT_STALE_SECONDS`) and unchanged, no other ingest took the session, and
this one adopts it (`adopt_session`): it heartbeats it and stores the leftovers through a
sink as a live connection would, trying again for as long as storage or the database is
away. A publisher that resumes the session here meanwhile is taken at once and continues
after the leftovers, its segments stored after theirs. With nothing more to store the
session's grace window opens, as after a dropped connection.

When their place is gone, the leftovers are not placed anywhere else (out of order, they
would break the recording and the stream's timeline): the session ended (no publisher came
back within the grace window and another ingest ended it), or it went on without them (its
publisher resumed it on another ingest, whose segments took the numbers after the last
stored one). They are then set aside under the spool's `unplaced/` folder, counted in the
spool's report (`unplaced`, `nebula_ingest_spool_unplaced_segments`) and named in a log
line, for the operator; nothing is deleted.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from enum import StrEnum

from celery import Celery
from redis import Redis
from sqlalchemy import select

from core.db import session_scope
from core.models import LiveSession, SessionStatus, Stream
from core.settings import Settings
from core.storage import ObjectStore
from ingest.holder import known_dead
from ingest.publication import ResumePoint
from ingest.sessions import HEARTBEAT_STALE_SECONDS, now
from ingest.spool import Leftover, SpoolEntry
from ingest.spool_record import SpoolRecord
from media.types import CLOCK_HZ
from packager.source_writer import SourceWriter

# Between looks at a session whose heartbeat is not stale yet, or while the database is away.
ADOPT_POLL_SECONDS = 1.0


class Adoption(StrEnum):
    ADOPTED = "adopted"  # this process holds the session now: the leftovers go in
    WAIT = "wait"  # its heartbeat is not stale yet: the dead process's, or someone else's
    ENDED = "ended"
    TAKEN = "taken"  # another connection had the session since


def adopt_session(
    database_url: str, session_id: uuid.UUID, seen: datetime | None, holder: str
) -> tuple[Adoption, datetime | None]:
    """Hold the session for its leftovers once nobody does: its heartbeat a stale period
    old, or at once if its holder is a process of this host that no longer runs
    (`ingest.holder`). `seen` is the heartbeat this replay first saw (None the first time);
    the heartbeat it sees now comes back with WAIT. `holder` is this process. Under the
    stream row's lock, as `sessions.open_publish`: one decision at a time."""
    with session_scope(database_url) as db:
        session = db.get(LiveSession, session_id)
        if session is None or session.stream_id is None:
            return Adoption.ENDED, None
        db.scalars(select(Stream).where(Stream.id == session.stream_id).with_for_update()).one()
        db.refresh(session, with_for_update=True)
        if session.status != SessionStatus.LIVE:
            return Adoption.ENDED, None
        if session.disconnected_at is not None or (seen and session.heartbeat_at != seen):
            return Adoption.TAKEN, None
        at = now()
        stale = timedelta(seconds=HEARTBEAT_STALE_SECONDS)
        fresh = session.heartbeat_at is not None and at - session.heartbeat_at < stale
        if fresh and not known_dead(session.holder):
            return Adoption.WAIT, session.heartbeat_at
        session.heartbeat_at, session.holder = at, holder
        return Adoption.ADOPTED, at


def replay_records(leftovers: list[Leftover]) -> list[tuple[SpoolRecord, SpoolEntry]]:
    """The leftovers as a sink stores them: numbered on from 0 in their order (the writer
    places the first where the stream's timeline ends by then, the rest after it), the
    first one a discontinuity (gaps may have come before it while nobody held the session)."""
    records = []
    for ordinal, leftover in enumerate(leftovers):
        segment = leftover.record.segment
        renumbered = replace(
            segment, sequence=ordinal, discontinuity=segment.discontinuity or ordinal == 0
        )
        records.append((replace(leftover.record, segment=renumbered), leftover.entry))
    return records


def replay_writer(
    leftovers: list[Leftover], settings: Settings, store: ObjectStore, redis: Redis, celery: Celery
) -> SourceWriter:
    """A writer for the session that starts at the first leftover, dated where its
    publication dated it (later if the timeline ends later by now)."""
    first = leftovers[0].record
    offset = (first.segment.start_ticks - first.timeline_start) / CLOCK_HZ
    return SourceWriter(
        settings,
        store,
        redis,
        celery,
        stream_id=first.stream_id,
        session_id=first.session_id,
        timeline_start=first.segment.start_ticks,
        transcode=first.transcode,
        wall_clock_origin=first.wall_clock_origin + timedelta(seconds=offset),
    )


def leftovers_end(leftovers: list[Leftover]) -> ResumePoint:
    last = leftovers[-1].record
    return ResumePoint.after(last.segment, last.target_duration)


def unplaced_reason(leftovers: list[Leftover], outcome: Adoption) -> str:
    """What the log says of leftovers set aside."""
    first, last = leftovers[0].record, leftovers[-1].record
    seconds = sum(left.record.segment.duration_ticks for left in leftovers) / CLOCK_HZ
    why = {
        Adoption.ENDED: "the session ended before they could be stored",
        Adoption.TAKEN: "the session went on without them on another connection",
    }[outcome]
    return (
        f"segments {first.segment.sequence}-{last.segment.sequence} ({seconds:.1f} s) of "
        f"session {first.session_id} (stream {first.stream_id}) cannot go into its recording "
        f"in order: {why}"
    )
