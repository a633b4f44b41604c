"""Publisher outages on the stream URL: gap rows at target cadence while nobody feeds it.

A stream's live presentation stays open while a publisher may still come back: within the
reconnect grace window its session waits, and after that the hold
(`presentation_hold_seconds`, counted from the disconnect) lets a new session join. A
player keeps reloading all along, and its playlists must still advance (RFC 8216bis 6.2.1,
a new segment every 1.5 target durations; AVPlayer gives up otherwise), so this sweep adds
EXT-X-GAP rows to the timeline, one per target duration that passed, dated on from where
the media stopped. A publisher that is back but whose first segment has not closed yet
(a target duration or a GOP away) still counts as absent: its segments take their numbers
when the first one is stored (`timeline.claim_place`). Once the hold runs out the sweep ends
the presentation: EXT-X-ENDLIST.

Rows, not a clock in each API process, so every process renders the same playlist, and a
resumed or joining publish numbers its segments after the last gap it could have been shown.
Every ingest process sweeps; the stream row's lock (skip-locked) gives each stream to one.
An ingest killed mid-publish cannot sweep for itself: its session counts as unfed once its
heartbeat is stale (`HEARTBEAT_STALE_SECONDS`), when another process's sweep writes the gaps
since the last segment it stored, all at once, and goes on from there. A heartbeat is
judged stale only by a process that has reached the database for a whole stale period
itself, and never for a session the sweeping process holds: after a database outage every
heartbeat is late, and none of those publishers left.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, exists, select, true
from sqlalchemy.orm import Session

from core.db import session_scope
from core.models import LiveSession, Stream
from ingest.sessions import HEARTBEAT_STALE_SECONDS, now
from packager.timeline import gaps_due, presentation_last_session


def advance_outages(
    database_url: str,
    hold_seconds: float,
    *,
    at: datetime | None = None,
    held: Collection[uuid.UUID] = (),
    judge_stale: bool = True,
) -> list[uuid.UUID]:
    """Write the gaps every unfed open presentation owes by `at` (now), end those whose
    hold ran out; returns the streams whose playlists changed. A session in `held` (the
    caller's own) or, with `judge_stale` False, any session counts as fed however old its
    heartbeat, as `sessions.end_expired_sessions` has it."""
    at = at or now()
    fresh = Freshness(at, held, judge_stale)
    fed = exists().where(
        LiveSession.stream_id == Stream.id,
        LiveSession.status == "live",
        LiveSession.disconnected_at.is_(None),
        fresh.condition(),
        LiveSession.fed_at.is_not(None),
    )
    with session_scope(database_url) as db:
        unfed = db.scalars(select(Stream.id).where(_open_presentation(), ~fed)).all()
    return [s for s in unfed if _advance(database_url, s, hold_seconds, at, fresh)]


@dataclass(frozen=True, slots=True)
class Freshness:
    """Which live sessions' heartbeats count as fresh at `at`."""

    at: datetime
    held: Collection[uuid.UUID]
    judge_stale: bool

    def condition(self) -> ColumnElement[bool]:
        if not self.judge_stale:
            return true()
        stale_cut = self.at - timedelta(seconds=HEARTBEAT_STALE_SECONDS)
        return (LiveSession.heartbeat_at > stale_cut) | LiveSession.id.in_(list(self.held))

    def fresh(self, session: LiveSession) -> bool:
        if not self.judge_stale or session.id in self.held:
            return True
        return session.heartbeat_at is not None and self.at - session.heartbeat_at <= timedelta(
            seconds=HEARTBEAT_STALE_SECONDS
        )


def _open_presentation() -> ColumnElement[bool]:
    return Stream.presentation_sequence.is_not(None) & Stream.presentation_ended_at.is_(None)


def _advance(
    database_url: str, stream_id: uuid.UUID, hold_seconds: float, at: datetime, fresh: Freshness
) -> bool:
    with session_scope(database_url) as db:
        stream = db.scalars(
            select(Stream)
            .where(Stream.id == stream_id, _open_presentation())
            .with_for_update(skip_locked=True)
        ).first()
        if stream is None:  # another ingest has it, or a publish just took it
            return False
        until = _gaps_until(db, stream, at, hold_seconds, fresh)
        if until is None:
            return False
        gaps = []
        if stream.target_duration is not None:
            gaps = gaps_due(
                db, stream.id, stream.presentation_sequence, stream.target_duration, until
            )
        ended = until < at
        if ended:
            stream.presentation_ended_at = at
        return bool(gaps) or ended


def _gaps_until(
    db: Session, stream: Stream, at: datetime, hold_seconds: float, fresh: Freshness
) -> datetime | None:
    """Up to when the presentation is owed gaps: now while its last session waits for its
    publisher (or for the first segment of a new connection), the end of the hold once it
    ended (in the past: the presentation is over); None while a publisher feeds it."""
    last = presentation_last_session(db, stream)
    if last is None:
        return None
    if last.status == "live":
        fed = last.disconnected_at is None and fresh.fresh(last) and last.fed_at is not None
        return None if fed else at
    ended_at = last.ended_at or at
    return min(at, ended_at + timedelta(seconds=hold_seconds))
