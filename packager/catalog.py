"""How playlists read: a stream's live presentation and a session's recording, from rows.

The stream URL (`/hls/{stream}/...`) is one live presentation across sessions: sessions
join it one after another on the stream's timeline (`packager.timeline`), so its media
sequence and discontinuity sequence never go back, each new session starts with
EXT-X-DISCONTINUITY and its own EXT-X-MAP, and it keeps one target duration. A rendition's
playlist lists the last `window` sequence numbers of the timeline, each as its own segment
or as EXT-X-GAP where it has none (a failed transcode, a session without that rung), so no
playlist a master ever listed answers 404; an outage, where no variant has media, is a slate
(`packager.slate_uris`) between two EXT-X-DISCONTINUITY tags. It ends with EXT-X-ENDLIST only
when the presentation does (`Stream.presentation_ended_at`). A session's recording
(`/hls/sessions/{id}/...`) is a presentation of its own: every segment it made.

Where the objects live is `packager.keys`; the text itself is the pure `media.hls.playlist`.
The API keeps renderings under `packager.playlist_versions`: a new row or column a render
reads here must show in the version there too.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from sqlalchemy import Row, exists, func, select
from sqlalchemy.orm import Session, aliased, selectinload

from core.models import (
    LadderJob,
    LiveSession,
    Rendition,
    Segment,
    SegmentStatus,
    SessionStatus,
    Stream,
)
from media.hls.playlist import (
    CLOSED_CAPTIONS_NONE,
    MediaPlaylist,
    SegmentEntry,
    Variant,
    render_master_playlist,
    render_media_playlist,
)
from media.hls.slate import SlateFormat
from media.hls.target_duration import fitting_target_duration
from media.ladder import SOURCE
from packager import slate_uris
from packager.keys import segment_name
from packager.ladder_rows import quality_order, session_rungs
from packager.timeline import stream_source_rows

# How a listed object is named: from the session that made it and its object name.
UriOf = Callable[[uuid.UUID, str], str]


@dataclass(frozen=True, slots=True)
class PlaylistPolicy:
    target_seconds: float
    window: int

    @property
    def target_duration(self) -> int:
        """The least target duration, for a playlist without a fixed one: a presentation
        before its first segment, or a recording made before target durations were kept."""
        return max(1, math.ceil(self.target_seconds))


@dataclass(frozen=True, slots=True)
class RenderedPlaylist:
    text: str
    ended: bool  # EXT-X-ENDLIST is in it: the text never changes again
    slates: tuple[str, ...] = ()  # the slate URIs it lists (`packager.slate_uris`)


@dataclass(frozen=True, slots=True)
class Presentation:
    """A stream's current live presentation: its row and the sessions that joined it,
    oldest first, with the renditions each one plans (`planned_renditions`)."""

    stream: Stream
    sessions: tuple[LiveSession, ...]
    planned: Mapping[uuid.UUID, frozenset[str]]

    @property
    def first_sequence(self) -> int:
        return self.stream.presentation_sequence or 0

    @property
    def ended(self) -> bool:
        return self.stream.presentation_ended_at is not None

    @property
    def renditions(self) -> frozenset[str]:
        """Every rendition a master of this presentation can have listed."""
        return frozenset().union(*self.planned.values())

    def planning(self, name: str) -> list[uuid.UUID]:
        return [s.id for s in self.sessions if name in self.planned[s.id]]


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


def planned_renditions(session: LiveSession) -> frozenset[str]:
    """The renditions a session has or will have: the source, and the rungs its ladder gives
    the source's size (known from the session's first segment on)."""
    source = next((r for r in session.renditions if r.name == SOURCE), None)
    rungs = session_rungs(session, source) if source is not None else []
    return frozenset({SOURCE, *(rung.name for rung in rungs)})


def current_presentation(db: Session, stream_id: uuid.UUID) -> Presentation | None:
    """The presentation the stream URL serves; None before the stream's first publish."""
    stream = db.get(Stream, stream_id)
    if stream is None or stream.presentation_sequence is None:
        return None
    sessions = tuple(
        db.scalars(
            select(LiveSession)
            .where(
                LiveSession.stream_id == stream_id,
                LiveSession.presentation_sequence == stream.presentation_sequence,
            )
            .order_by(LiveSession.started_at)
            .options(selectinload(LiveSession.renditions))
        )
    )
    return Presentation(stream, sessions, {s.id: planned_renditions(s) for s in sessions})


def first_pending_sequence(
    db: Session,
    session_ids: Iterable[uuid.UUID],
    name: str,
    through_sequence: int,
    from_sequence: int | None = None,
) -> int | None:
    """The first media segment of these sessions' timeline, up to `through_sequence`, that
    rendition `name` has no row for yet (None: it has them all). Workers finish a rung's
    segments out of order, so a rung lists only the prefix before it; a failed one has a
    row and shows as EXT-X-GAP."""
    source, own = aliased(Segment), aliased(Segment)
    source_rendition, own_rendition = aliased(Rendition), aliased(Rendition)
    query = (
        select(func.min(source.sequence))
        .join(source_rendition, source.rendition_id == source_rendition.id)
        .where(
            source_rendition.session_id.in_(list(session_ids)),
            source_rendition.name == SOURCE,
            source.status != SegmentStatus.GAP,
            source.sequence <= through_sequence,
            ~exists().where(
                own.rendition_id == own_rendition.id,
                own_rendition.session_id == source_rendition.session_id,
                own_rendition.name == name,
                own.sequence == source.sequence,
            ),
        )
    )
    if from_sequence is not None:
        query = query.where(source.sequence >= from_sequence)
    return db.scalar(query)


def _listable_through(
    db: Session,
    session_ids: list[uuid.UUID],
    planning: list[uuid.UUID],
    name: str,
    from_sequence: int | None = None,
) -> tuple[int, int | None]:
    """The last sequence number rendition `name` may list now (-1: none), and its first
    pending one (None: it has every segment so far).

    Both are taken against the timeline's newest row at the start, and the playlist lists
    nothing after it: rows written while it renders wait for the next reload, so the rung
    rows looked for and the timeline rows listed are the same moment's (a source row
    committed in between would otherwise be listed before its rung row was looked for).
    """
    newest = db.scalar(
        select(func.max(Segment.sequence))
        .join(Rendition, Segment.rendition_id == Rendition.id)
        .where(Rendition.session_id.in_(session_ids), Rendition.name == SOURCE)
    )
    if newest is None:
        return -1, None
    if name == SOURCE:
        return newest, None
    pending = first_pending_sequence(db, planning, name, newest, from_sequence)
    return (newest if pending is None else pending - 1), pending


def _own_rows(
    db: Session, session_ids: list[uuid.UUID], name: str, sequences: list[int]
) -> dict[int, Segment]:
    if name == SOURCE or not sequences or not session_ids:
        return {}
    rows = db.scalars(
        select(Segment)
        .join(Rendition, Segment.rendition_id == Rendition.id)
        .where(
            Rendition.session_id.in_(session_ids),
            Rendition.name == name,
            Segment.sequence.between(sequences[0], sequences[-1]),
        )
    )
    return {row.sequence: row for row in rows}


def timeline_entry(
    source: Segment,
    session_id: uuid.UUID,
    own: Segment | None,
    uri_of: UriOf,
    *,
    late_is_gap: bool,
    slate: SlateFormat | None = None,
) -> SegmentEntry:
    """One sequence number of a rendition's playlist, from the timeline's row there and the
    rendition's own (for the source, the same row; None where the rendition has no media).

    Duration, date and discontinuity come from the timeline, so every variant lists the
    same ones; without media of its own the entry is a GAP under the name it would have had.
    `late_is_gap`: a rung segment that missed its deadline stays a GAP even once its late
    result has landed. A live (or EVENT) playlist may only grow (RFC 8216bis 6.2.1), and a
    player that skipped the GAP would not fetch the segment again anyway.
    `slate`: an outage (a gap row of the timeline) is listed as this slate instead of a GAP
    (`packager.slate_uris`), as the stream URL's live window does.
    """
    if source.status == SegmentStatus.GAP and slate is not None:
        return SegmentEntry(
            sequence=source.sequence,
            uri=slate_uris.segment_uri(slate, source.sequence, source.duration),
            duration=source.duration,
            program_date_time=source.program_date_time,
            discontinuity=source.discontinuity,
            map_uri=slate_uris.init_uri(slate),
        )
    if source.status == SegmentStatus.GAP or own is None:
        return SegmentEntry(
            sequence=source.sequence,
            uri=uri_of(session_id, segment_name(source.sequence)),
            duration=source.duration,
            program_date_time=source.program_date_time,
            discontinuity=source.discontinuity,
            gap=True,
        )
    # A failed row names the init its rung would have had, which may never have been made
    # (a rung whose first segments all missed their deadline): its GAP brings no EXT-X-MAP.
    failed = own.status == SegmentStatus.FAILED
    return SegmentEntry(
        sequence=source.sequence,
        uri=uri_of(session_id, own.object_key.rpartition("/")[2]),
        duration=source.duration,
        program_date_time=source.program_date_time,
        discontinuity=source.discontinuity,
        gap=failed or (late_is_gap and bool(own.missed_deadline)),
        map_uri=None if failed else uri_of(session_id, own.init_key.rpartition("/")[2]),
    )


def _map_in_force(
    db: Session, entries: list[SegmentEntry], session_ids: list[uuid.UUID], name: str
) -> list[SegmentEntry]:
    """The window with an EXT-X-MAP before its first entry (Apple 8.20): a window that opens
    on gaps (an outage, a rung not made yet) takes the init of its first media segment, or,
    with none in it, of the rendition's last media before the window, or, where it has
    none yet (its first segments all missed their deadline), its slate's: an init that
    answers, where the GAPs would otherwise name one never made."""
    if not entries or entries[0].map_uri is not None:
        return entries
    known = next((e.map_uri for e in entries if e.map_uri is not None), None)
    if known is None and session_ids:
        earlier = db.execute(
            select(Segment.init_key, Rendition.session_id)
            .join(Rendition, Segment.rendition_id == Rendition.id)
            .where(
                Rendition.session_id.in_(session_ids),
                Rendition.name == name,
                Segment.status == SegmentStatus.READY,
                Segment.sequence < entries[0].sequence,
            )
            .order_by(Segment.sequence.desc())
            .limit(1)
        ).first()
        if earlier is not None:
            known = stream_uri(earlier.session_id, earlier.init_key.rpartition("/")[2])
    if known is None and session_ids:
        rendition = db.scalars(
            select(Rendition).where(Rendition.session_id == session_ids[-1], Rendition.name == name)
        ).first()
        known = slate_uris.init_uri(slate_uris.slate_format(rendition))
    return [replace(entries[0], map_uri=known), *entries[1:]] if known else entries


def _slates(
    db: Session, rows: Sequence[Row[tuple[Segment, uuid.UUID]]], name: str
) -> dict[uuid.UUID, SlateFormat]:
    """The slate of rendition `name` for each session with an outage in the window: in its
    size there, or, where the session has no such rendition, as the fallback."""
    outages = {session_id for row, session_id in rows if row.status == SegmentStatus.GAP}
    if not outages:
        return {}
    known = slate_uris.slate_formats(
        db.scalars(
            select(Rendition).where(Rendition.session_id.in_(outages), Rendition.name == name)
        )
    )
    return {
        session_id: known.get(session_id, slate_uris.slate_format(None)) for session_id in outages
    }


def stream_uri(session_id: uuid.UUID, name: str) -> str:
    """Relative to `/hls/{stream}/{rendition}/`: objects of every session sit below it."""
    return f"{session_id}/{name}"


def recording_uri(_session_id: uuid.UUID, name: str) -> str:
    """Relative to `/hls/sessions/{session}/{rendition}/`, beside the recording's playlist."""
    return name


def render_stream_media(
    db: Session, presentation: Presentation, name: str, policy: PlaylistPolicy
) -> RenderedPlaylist:
    """The live window of rendition `name` (one of `presentation.renditions`) across the
    presentation's sessions."""
    start = presentation.first_sequence
    sessions = [s.id for s in presentation.sessions]
    planning = presentation.planning(name)
    last, pending = _listable_through(db, sessions, planning, name, start)
    query = (
        select(Segment, Rendition.session_id)
        .join(Rendition, Segment.rendition_id == Rendition.id)
        .where(
            Rendition.session_id.in_(sessions),
            Rendition.name == SOURCE,
            Segment.sequence.between(start, last),
        )
    )
    rows = db.execute(query.order_by(Segment.sequence.desc()).limit(policy.window)).all()[::-1]
    own = _own_rows(db, planning, name, [row.sequence for row, _ in rows])
    slates = _slates(db, rows, name)
    entries = [
        timeline_entry(
            row,
            session_id,
            row if name == SOURCE else own.get(row.sequence),
            stream_uri,
            late_is_gap=True,
            slate=slates.get(session_id),
        )
        for row, session_id in rows
    ]
    entries = _map_in_force(db, entries, planning, name)
    media_sequence = entries[0].sequence if entries else (start if pending is None else pending)
    stream = presentation.stream
    # The source's rows are its own, so no late ladder result can change its playlist: it
    # ends with the presentation, not with the ladder (standing still meanwhile past 1.5
    # target durations breaks RFC 8216 6.2.1's rule for a playlist without ENDLIST).
    ended = (
        presentation.ended
        and pending is None
        and (name == SOURCE or not ladder_pending(db, presentation.sessions))
    )
    text = render_media_playlist(
        MediaPlaylist(
            segments=entries,
            target_duration=stream.target_duration
            or fitting_target_duration((e.duration for e in entries), policy.target_duration),
            ended=ended,
            media_sequence=media_sequence,
            discontinuity_sequence=db.scalar(
                select(func.count()).select_from(
                    stream_source_rows(stream.id)
                    .where(Segment.discontinuity.is_(True), Segment.sequence < media_sequence)
                    .subquery()
                )
            ),
            independent_segments=all(independent_segments(s, name) for s in presentation.sessions),
        )
    )
    slated = {e.uri for e in entries if e.uri.startswith(slate_uris.SLATE_DIR + "/")}
    slated |= {
        e.map_uri for e in entries if (e.map_uri or "").startswith(slate_uris.SLATE_DIR + "/")
    }
    return RenderedPlaylist(text, ended, tuple(sorted(slated)))


def ladder_pending(db: Session, sessions: Iterable[LiveSession]) -> bool:
    """Whether ladder work of these sessions is still queued or running: until it is done a
    late result may still replace a gap, and a playlist must not change once it says ENDLIST."""
    ids = [s.id for s in sessions]
    return bool(db.scalar(select(exists().where(LadderJob.session_id.in_(ids)))))


HEVC_CODECS = ("hvc1", "hev1")


def independent_segments(session: LiveSession, rendition: str | None = None) -> bool:
    """Whether every segment starts with an IDR: not so for an open-GOP passthrough source
    (the rungs are encoded here, always closed), which shows once its second segment opens
    on a CRA. `rendition` is a name; without one: the master's claim, which covers every
    variant and is read once, before that can show, so no HEVC source gets it (x265 is
    open-GOP by default)."""
    if rendition is not None:
        return not (rendition == SOURCE and session.open_gop)
    source = next((r for r in session.renditions if r.name == SOURCE), None)
    hevc = source is not None and source.codecs.startswith(HEVC_CODECS)
    return not (session.open_gop or hevc)


def master_order(rendition: Rendition) -> tuple[bool, int, tuple[bool, int]]:
    """Sort key: the place the ladder plan gave (`ladder_rows.plan_ladder`), else quality."""
    return rendition.position is None, rendition.position or 0, quality_order(rendition)


def servable_master(db: Session, session: LiveSession) -> str | None:
    """The session's master once every rendition it lists has a row for the session's first
    segment (media, or a gap past the rung deadline): until then a player that read it once
    would start on an empty rung playlist (hls.js levelEmptyError, Shaka's 4053
    HLS_EMPTY_MEDIA_PLAYLIST). A rung lists only the prefix of segments it has, so a later
    segment finished first does not count. None before."""
    renditions = list(session.renditions)
    ids = [r.id for r in renditions]
    first = db.scalar(
        select(func.min(Segment.sequence))
        .join(Rendition, Segment.rendition_id == Rendition.id)
        .where(
            Rendition.session_id == session.id,
            Rendition.name == SOURCE,
            Segment.status != SegmentStatus.GAP,  # an outage's row: no rung has one
        )
    )
    if first is None:
        return None
    with_rows = db.scalar(
        select(func.count(Segment.rendition_id.distinct())).where(
            Segment.rendition_id.in_(ids), Segment.sequence == first
        )
    )
    if with_rows < len(renditions):
        return None
    return render_master(renditions, independent=independent_segments(session))


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

    It runs from the session's first segment to its last media: gaps of an outage the
    publisher came back from are listed (their sequence numbers are the stream's), those
    after its last media (the publisher never came back) are not. URIs are bare object
    names: the recording's playlists live beside its media, under
    `/hls/sessions/{session}/{rendition}/`, so a later session of the stream changes nothing.
    Once it is VOD, a rung segment that came late plays where the live playlists had a GAP.
    """
    name = rendition.name
    last, pending = _listable_through(db, [session.id], [session.id], name)
    query = (
        select(Segment)
        .join(Rendition, Segment.rendition_id == Rendition.id)
        .where(
            Rendition.session_id == session.id,
            Rendition.name == SOURCE,
            Segment.sequence <= last,
        )
    )
    rows = list(db.scalars(query.order_by(Segment.sequence)))
    while rows and rows[-1].status == SegmentStatus.GAP:
        rows.pop()
    own = _own_rows(db, [session.id], name, [row.sequence for row in rows])
    ended = (
        session.status != SessionStatus.LIVE
        and pending is None
        and (name == SOURCE or not ladder_pending(db, [session]))  # as the stream's, above
    )
    entries = [
        timeline_entry(
            row,
            session.id,
            row if name == SOURCE else own.get(row.sequence),
            recording_uri,
            late_is_gap=not ended,
        )
        for row in rows
    ]
    if entries:  # joining the stream's earlier sessions is no discontinuity of its own
        entries[0] = replace(entries[0], discontinuity=False)
    return render_media_playlist(
        MediaPlaylist(
            segments=entries,
            target_duration=session.target_duration
            or fitting_target_duration((e.duration for e in entries), policy.target_duration),
            ended=ended,
            playlist_type="VOD" if ended else "EVENT",
            media_sequence=entries[0].sequence if entries else (pending or 0),
            independent_segments=independent_segments(session, rendition.name),
        )
    )
