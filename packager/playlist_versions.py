"""What a rendered playlist depends on, read cheaply: the version a rendering is kept under.

`packager.catalog` renders a playlist from rows: the stream's, its sessions', their
renditions', those renditions' segments, and whether ladder work is pending. Every
statement that writes segments raises their rendition's `revision` (migration 0008), so a
version holds the other rows whole and the segments by revision: two equal versions, each
read in the same snapshot as its rendering, mean the same text. Reading one costs a few
indexed rows, where rendering a day-long recording reads every one of its 43k segments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from core.models import LiveSession, Rendition
from media.ladder import SOURCE
from packager.catalog import PlaylistPolicy, Presentation, ladder_pending

# Columns that change with every heartbeat or segment and that no playlist reads.
UNREAD_COLUMNS = frozenset({"heartbeat_at", "bytes_ingested"})


def row_state(row: object) -> tuple[tuple[str, object], ...]:
    """Every column value a mapped row holds (but the unread ones), by name."""
    return tuple(
        (column.key, getattr(row, column.key))
        for column in inspect(row).mapper.column_attrs
        if column.key not in UNREAD_COLUMNS
    )


def _digest(*parts: object) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest()


def _renditions_state(renditions: Iterable[Rendition]) -> tuple[object, ...]:
    return tuple(row_state(r) for r in sorted(renditions, key=lambda r: r.id))


def recording_version(
    db: Session, session: LiveSession, rendition: str, policy: PlaylistPolicy
) -> str:
    """The version of `catalog.render_recording` of the session's `rendition`."""
    renditions = db.scalars(select(Rendition).where(Rendition.session_id == session.id))
    return _digest(
        "recording",
        row_state(session),
        _renditions_state(renditions),
        rendition,
        ladder_pending(db, [session]),
        policy,
    )


def stream_media_version(
    db: Session, presentation: Presentation, rendition: str, policy: PlaylistPolicy
) -> str:
    """The version of `catalog.render_stream_media` of `rendition`: the presentation's rows,
    and the revisions of the stream's whole timeline (the source renditions of every session
    it had), which its discontinuity sequence counts."""
    stream = presentation.stream
    timeline = db.execute(
        select(Rendition.id, Rendition.revision)
        .join(LiveSession, Rendition.session_id == LiveSession.id)
        .where(LiveSession.stream_id == stream.id, Rendition.name == SOURCE)
        .order_by(Rendition.id)
    ).all()
    return _digest(
        "stream",
        row_state(stream),
        tuple((row_state(s), _renditions_state(s.renditions)) for s in presentation.sessions),
        tuple(tuple(row) for row in timeline),
        rendition,
        ladder_pending(db, presentation.sessions),
        policy,
    )
