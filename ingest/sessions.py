"""Publish sessions in PostgreSQL: who may publish, which session a publish joins, what it made.

Every decision happens in one transaction holding the stream row's lock, so any number of
ingest processes can take publishes for the same keys without racing each other.

A publish continues the stream's timeline (`packager.timeline`): a reconnect within the
grace window resumes its session, any other publish starts a session that joins the
stream's live presentation while it lasts (the hold after the last publisher left) or
starts a new one. Either way its segments take their numbers when its first one is stored
(`timeline.claim_place`), after the stream's last row, gaps included.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.db import session_scope
from core.models import LiveSession, Rendition, Segment, SessionStatus, Stream, StreamStatus
from core.stream_keys import hash_stream_key, key_matches
from ingest.holder import known_dead
from media.ladder import SOURCE
from media.types import CLOCK_HZ
from packager import timeline

# A live session whose ingest has not refreshed it for this long lost its process.
HEARTBEAT_STALE_SECONDS = 15.0


class PublishRefusedError(Exception):
    """The publish is refused; the message is what the publisher is told."""


class UnknownStreamKeyError(PublishRefusedError):
    """No stream has this key (as against a stream that exists but may not publish now)."""


@dataclass(frozen=True, slots=True)
class PublishGrant:
    stream_id: uuid.UUID
    session_id: uuid.UUID
    resumed: bool
    first_sequence: int  # the stream's next number now; gaps may still come before it
    timeline_start: int
    init_index: int
    transcode: bool = True  # False when the session's ladder is empty: the source only
    # The first segment follows other media on the stream URL: a resumed session, or one
    # that joined the stream's live presentation.
    discontinuity: bool = False
    target_duration: int | None = None  # the presentation's, once its first segment closed


@dataclass(frozen=True, slots=True)
class EndedSession:
    stream_id: uuid.UUID
    session_id: uuid.UUID


def now() -> datetime:
    return datetime.now(UTC)


def _end(db: Session, session: LiveSession, at: datetime) -> None:
    session.status = SessionStatus.ENDED
    session.ended_at = session.disconnected_at or at
    if session.stream and session.stream.status == StreamStatus.LIVE:
        session.stream.status = StreamStatus.IDLE


def _publishable_stream(db: Session, stream_key: str, *, lock: bool) -> Stream:
    query = select(Stream).where(Stream.stream_key_hash == hash_stream_key(stream_key))
    stream = db.scalars(query.with_for_update() if lock else query).first()
    if stream is None or not key_matches(stream_key, stream.stream_key_hash):
        raise UnknownStreamKeyError("unknown stream key")
    if stream.status == StreamStatus.DISABLED:
        raise PublishRefusedError("stream is disabled")
    return stream


def check_publish_key(database_url: str, stream_key: str) -> None:
    """Raise `PublishRefusedError` if no publish with this key can be accepted (unknown key,
    disabled stream). For protocols that can refuse before accepting a connection (SRT's
    handshake); `open_publish` still decides, as the stream may change in between."""
    with session_scope(database_url) as db:
        _publishable_stream(db, stream_key, lock=False)


def open_publish(
    database_url: str,
    stream_key: str,
    protocol: str,
    grace_seconds: float,
    *,
    hold_seconds: float = 0.0,
    holder: str | None = None,
    resumable_here: Collection[uuid.UUID] = (),
) -> PublishGrant:
    """Authorise a publish and start a session, or continue one a publisher dropped from.
    `holder` (`ingest.holder`) is the ingest process that takes it.

    A new session joins the stream's live presentation while it is open: until
    `hold_seconds` after its last session ended (and the outage sweep ended it).

    `resumable_here` are the caller's own sessions whose publisher is gone while the caller
    still stores their segments (it holds them: their heartbeat is fresh). One of them is
    resumed at once, and stays fed: its place on the timeline is still the caller's."""
    with session_scope(database_url) as db:
        stream = _publishable_stream(db, stream_key, lock=True)
        at = now()
        current = db.scalars(
            select(LiveSession)
            .where(LiveSession.stream_id == stream.id, LiveSession.status == SessionStatus.LIVE)
            .order_by(LiveSession.started_at.desc())
        ).all()
        resumable = None
        for session in current:
            if session.id in resumable_here and resumable is None:
                resumable = session
                continue
            gone_at = _publisher_gone_at(session, at)
            if gone_at is None or gone_at > at:
                raise PublishRefusedError(_already_published(session, at))
            within_grace = at - gone_at <= timedelta(seconds=grace_seconds)
            if within_grace and resumable is None:
                resumable = session
            else:
                _end(db, session, at)
        stream.status = StreamStatus.LIVE
        next_sequence = timeline.next_sequence(db, stream.id)
        if resumable is not None:
            resumable.disconnected_at = None
            if resumable.id not in resumable_here:
                resumable.fed_at = None
            resumable.heartbeat_at = at
            resumable.holder = holder
            return _resume_grant(db, stream, resumable, next_sequence)
        joins = _presentation_open(db, stream, at, hold_seconds)
        if not joins:
            stream.presentation_sequence = next_sequence
            stream.target_duration = None
            stream.presentation_ended_at = None
        session = LiveSession(
            stream_id=stream.id,
            protocol=protocol,
            status=SessionStatus.LIVE,
            heartbeat_at=at,
            holder=holder,
            ladder=stream.ladder,
            presentation_sequence=stream.presentation_sequence,
            target_duration=stream.target_duration,
        )
        db.add(session)
        db.flush()
        return PublishGrant(
            stream.id,
            session.id,
            False,
            next_sequence,
            0,
            0,
            transcode=stream.ladder != [],
            discontinuity=joins,
            target_duration=stream.target_duration,
        )


def _publisher_gone_at(session: LiveSession, at: datetime) -> datetime | None:
    """When the session's publisher left, for its grace window: when it dropped, or, if
    its ingest died holding it, when that shows: once its heartbeat is a stale period old,
    or sooner, `at`, if this host can tell the process is gone (`ingest.holder`). None for
    a session no heartbeat ever came for."""
    if session.disconnected_at is not None:
        return session.disconnected_at
    if session.heartbeat_at is None:
        return None
    stale = session.heartbeat_at + timedelta(seconds=HEARTBEAT_STALE_SECONDS)
    return min(stale, at) if known_dead(session.holder) else stale


def _already_published(session: LiveSession, at: datetime) -> str:
    seconds = (at - session.heartbeat_at).total_seconds() if session.heartbeat_at else 0.0
    wait = max(0.0, HEARTBEAT_STALE_SECONDS - seconds)
    return (
        f"stream is already being published (its ingest reported it {seconds:.0f} s ago; if "
        f"that ingest stopped, a publish in {wait:.0f} s continues the session)"
    )


def _presentation_open(db: Session, stream: Stream, at: datetime, hold_seconds: float) -> bool:
    """Whether a new session of the stream joins its current presentation: it has not
    ended, and its last session (no longer live) ended within the hold."""
    if stream.presentation_sequence is None or stream.presentation_ended_at is not None:
        return False
    last = timeline.presentation_last_session(db, stream)
    ended_at = last.ended_at if last is not None else None
    return ended_at is not None and at - ended_at < timedelta(seconds=hold_seconds)


def _resume_grant(
    db: Session,
    stream: Stream,
    session: LiveSession,
    next_sequence: int,
) -> PublishGrant:
    """Continue the session's source timeline after its last segment (or gap), and the
    stream's sequence numbers after its last one."""
    row = db.execute(
        select(
            func.sum(Segment.duration),
            func.count(Segment.init_key.distinct()),
        )
        .join(Rendition, Segment.rendition_id == Rendition.id)
        .where(Rendition.session_id == session.id, Rendition.name == SOURCE)
    ).one()
    total_seconds, inits = row
    timeline = round((total_seconds or 0.0) * CLOCK_HZ)
    return PublishGrant(
        stream.id,
        session.id,
        True,
        next_sequence,
        timeline,
        inits or 0,
        transcode=session.ladder != [],
        discontinuity=True,
        target_duration=session.target_duration or stream.target_duration,
    )


def close_publish(
    database_url: str, session_id: uuid.UUID, *, explicit: bool
) -> EndedSession | None:
    """The publisher left. An explicit unpublish ends the session now; a dropped connection
    leaves it open for the reconnect grace window. Returns the session if it ended."""
    with session_scope(database_url) as db:
        session = db.get(LiveSession, session_id, with_for_update=True)
        if session is None or session.status != SessionStatus.LIVE:
            return None
        session.disconnected_at = now()
        if not explicit:
            return None
        _end(db, session, session.disconnected_at)
        return EndedSession(session.stream_id, session.id)


def heartbeat(database_url: str, session_ids: list[uuid.UUID]) -> None:
    if not session_ids:
        return
    with session_scope(database_url) as db:
        db.execute(
            update(LiveSession)
            .where(LiveSession.id.in_(session_ids), LiveSession.disconnected_at.is_(None))
            .values(heartbeat_at=now())
        )


def end_expired_sessions(
    database_url: str,
    grace_seconds: float,
    *,
    held: Collection[uuid.UUID] = (),
    judge_stale: bool = True,
) -> list[EndedSession]:
    """End sessions whose publisher did not come back in time, or whose ingest died (its
    heartbeat stale). Never one in `held`, the caller's own: its heartbeat may be late
    after a database outage, its publisher is not. `judge_stale` False: the caller has not
    reached the database for a whole stale period, so a stale heartbeat says nothing yet
    (every ingest lost the database too; theirs come back with it)."""
    at = now()
    grace_cut = at - timedelta(seconds=grace_seconds)
    expired_condition = LiveSession.disconnected_at <= grace_cut
    if judge_stale:  # its ingest died: the grace window runs from when that shows
        stale_cut = grace_cut - timedelta(seconds=HEARTBEAT_STALE_SECONDS)
        expired_condition |= LiveSession.disconnected_at.is_(None) & (
            LiveSession.heartbeat_at <= stale_cut
        )
    with session_scope(database_url) as db:
        expired = db.scalars(
            select(LiveSession)
            .where(
                LiveSession.status == SessionStatus.LIVE,
                LiveSession.stream_id.is_not(None),  # an upload's session is its job's to end
                LiveSession.id.not_in(list(held)),
                expired_condition,
            )
            .with_for_update(skip_locked=True)
        ).all()
        for session in expired:
            if session.disconnected_at is None:
                session.disconnected_at = session.heartbeat_at
            _end(db, session, at)
        return [EndedSession(s.stream_id, s.id) for s in expired]


def record_ingest_report(database_url: str, session_id: uuid.UUID, report: dict[str, Any]) -> None:
    """Keep what the ingest observed of the transport (loss, drops, ignored tracks) in the
    session's media_info under `ingest`, where the sessions API shows it."""
    with session_scope(database_url) as db:
        session = db.get(LiveSession, session_id, with_for_update=True)
        if session is not None:
            session.media_info = {**(session.media_info or {}), "ingest": report}
