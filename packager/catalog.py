"""How playlists read: the rows a rendition may list, rendered as media and master playlists.

Where the objects live is `packager.keys`; the text itself is the pure `media.hls.playlist`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.orm import Session, aliased

from core.models import LadderJob, LiveSession, Rendition, Segment, SegmentStatus, SessionStatus
from media.hls.playlist import (
    CLOSED_CAPTIONS_NONE,
    MediaPlaylist,
    SegmentEntry,
    Variant,
    render_master_playlist,
    render_media_playlist,
)
from media.ladder import SOURCE
from packager.keys import rendition_prefix


@dataclass(frozen=True, slots=True)
class PlaylistPolicy:
    target_seconds: float
    window: int

    @property
    def target_duration(self) -> int:
        return max(1, math.ceil(self.target_seconds))


def latest_session(db: Session, stream_id: uuid.UUID) -> LiveSession | None:
    return db.scalars(
        select(LiveSession)
        .where(LiveSession.stream_id == stream_id)
        .order_by(LiveSession.started_at.desc())
        .limit(1)
    ).first()


def find_rendition(db: Session, session_id: uuid.UUID, name: str) -> Rendition | None:
    return db.scalars(
        select(Rendition).where(Rendition.session_id == session_id, Rendition.name == name)
    ).first()


def first_missing_sequence(db: Session, session_id: uuid.UUID, rendition_id: int) -> int | None:
    """The first source segment a ladder rung has no row for (None: the rung has them all)."""
    source, rung = aliased(Segment), aliased(Segment)
    return db.scalar(
        select(func.min(source.sequence))
        .join(Rendition, source.rendition_id == Rendition.id)
        .where(
            Rendition.session_id == session_id,
            Rendition.name == SOURCE,
            ~exists().where(rung.rendition_id == rendition_id, rung.sequence == source.sequence),
        )
    )


def _listable(
    db: Session, session: LiveSession, rendition: Rendition
) -> tuple[ColumnElement[bool], bool]:
    """Which of a rendition's segments a playlist may list, and whether that is all of them.

    Workers finish a rung's segments out of order, so a rung lists only the prefix before
    its first missing source segment (a failed one has a row and shows as EXT-X-GAP; so does
    a live one past its deadline, `packager.ladder_deadline`), and is complete only once it
    has every source segment and no ladder work is pending: a late result may still replace
    a gap, and a VOD playlist must not change once it says ENDLIST.
    """
    listed = Segment.rendition_id == rendition.id
    if rendition.name != SOURCE:
        missing = first_missing_sequence(db, session.id, rendition.id)
        if missing is not None:
            return listed & (Segment.sequence < missing), False
        pending = db.scalar(select(exists().where(LadderJob.session_id == session.id)))
        return listed, not pending
    return listed, True


def _entry(row: Segment, uri_of: Callable[[str], str], *, late_is_gap: bool) -> SegmentEntry:
    """`late_is_gap`: a rung segment that missed its deadline stays a GAP even once its late
    result has landed. A live (or EVENT) playlist may only grow (RFC 8216bis 6.2.1), and a
    player that skipped the GAP would not fetch the segment again anyway."""
    return SegmentEntry(
        sequence=row.sequence,
        uri=uri_of(row.object_key),
        duration=row.duration,
        program_date_time=row.program_date_time,
        discontinuity=row.discontinuity,
        gap=row.status == SegmentStatus.FAILED or (late_is_gap and row.missed_deadline),
        map_uri=uri_of(row.init_key),
    )


def render_media(
    db: Session, session: LiveSession, rendition: Rendition, policy: PlaylistPolicy
) -> str:
    """The live sliding window of a rendition, with EXT-X-ENDLIST once the session is over
    and the rendition has every segment."""
    listed, complete = _listable(db, session, rendition)
    rows = db.scalars(
        select(Segment).where(listed).order_by(Segment.sequence.desc()).limit(policy.window)
    ).all()[::-1]
    earlier_discontinuities = 0
    if rows:
        earlier_discontinuities = db.scalar(
            select(func.count())
            .select_from(Segment)
            .where(
                Segment.rendition_id == rendition.id,
                Segment.discontinuity.is_(True),
                Segment.sequence < rows[0].sequence,
            )
        )
    prefix = rendition_prefix(session.stream_id, rendition.name) + "/"
    entries = [_entry(row, lambda key: key.removeprefix(prefix), late_is_gap=True) for row in rows]
    return render_media_playlist(
        MediaPlaylist(
            segments=entries,
            target_duration=policy.target_duration,
            ended=session.status != SessionStatus.LIVE and complete,
            media_sequence=rows[0].sequence if rows else 0,
            discontinuity_sequence=earlier_discontinuities,
            independent_segments=independent_segments(session, rendition),
        )
    )


HEVC_CODECS = ("hvc1", "hev1")


def independent_segments(session: LiveSession, rendition: Rendition | None = None) -> bool:
    """Whether every segment starts with an IDR: not so for an open-GOP passthrough source
    (the rungs are encoded here, always closed), which shows once its second segment opens
    on a CRA. Without a rendition: the master's claim, which covers every variant and is
    read once, before that can show, so no HEVC source gets it (x265 is open-GOP by default)."""
    if rendition is not None:
        return not (rendition.name == SOURCE and session.open_gop)
    source = next((r for r in session.renditions if r.name == SOURCE), None)
    hevc = source is not None and source.codecs.startswith(HEVC_CODECS)
    return not (session.open_gop or hevc)


def quality_order(rendition: Rendition) -> tuple[bool, int]:
    """Sort key: the source first as the top quality, then the rungs from tallest down."""
    return rendition.name != SOURCE, -(rendition.height or 0)


def master_order(rendition: Rendition) -> tuple[bool, int, tuple[bool, int]]:
    """Sort key: the place the ladder plan gave (`ladder_rows.plan_ladder`), else quality."""
    return rendition.position is None, rendition.position or 0, quality_order(rendition)


def render_master(renditions: Sequence[Rendition], *, independent: bool = True) -> str | None:
    """The master of a session: every variant its ladder plan made, in the planned order;
    None (not served) until the source has its first segment, when the plan is made.

    Every video variant says its FRAME-RATE (rungs keep the source's timing), and every
    variant CLOSED-CAPTIONS=NONE: the ladder carries no caption rendition.
    """
    source = next((r for r in renditions if r.name == SOURCE), None)
    if source is None or not source.media_seconds:
        return None
    # A rung row from before ladders were planned may have no codecs: it waits for them.
    listed = sorted((r for r in renditions if r.codecs), key=master_order)
    return render_master_playlist(
        [
            Variant(
                uri=f"{r.name}/index.m3u8",
                bandwidth=max(r.bandwidth, 1),
                codecs=r.codecs,
                average_bandwidth=r.average_bandwidth or None,
                resolution=(r.width, r.height) if r.width and r.height else None,
                frame_rate=(r.frame_rate or source.frame_rate) if r.width else None,
                closed_captions=CLOSED_CAPTIONS_NONE,
                name=r.name,
            )
            for r in listed
        ],
        independent_segments=independent,
    )


def render_recording(
    db: Session, session: LiveSession, rendition: Rendition, policy: PlaylistPolicy
) -> str:
    """Every segment the session made in a rendition (live-to-VOD): an EVENT playlist that
    grows while live, a VOD one with EXT-X-ENDLIST once ended.

    URIs are bare object names: the recording's playlists live beside its media, under
    `/hls/sessions/{session}/{rendition}/`, so a later session of the stream changes nothing.
    Once it is VOD, a rung segment that came late plays where the live playlists had a GAP.
    """
    listed, complete = _listable(db, session, rendition)
    rows = db.scalars(select(Segment).where(listed).order_by(Segment.sequence)).all()
    ended = session.status != SessionStatus.LIVE and complete
    entries = [
        _entry(row, lambda key: key.rpartition("/")[2], late_is_gap=not ended) for row in rows
    ]
    return render_media_playlist(
        MediaPlaylist(
            segments=entries,
            target_duration=policy.target_duration,
            ended=ended,
            playlist_type="VOD" if ended else "EVENT",
            media_sequence=rows[0].sequence if rows else 0,
            independent_segments=independent_segments(session, rendition),
        )
    )
