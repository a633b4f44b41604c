"""Sessions: each publish of a stream, with what it carried and its own recording."""

from __future__ import annotations

import uuid
from collections import defaultdict

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from api.deps import Authorized, DbSession, PageLimit, PageOffset, SettingsDep, get_stream_or_404
from api.schemas import SessionOut, SessionPage
from core.models import LiveSession, Rendition, Segment, SegmentStatus

router = APIRouter(prefix="/api/v1", tags=["sessions"], dependencies=[Authorized])


def _segment_counts(db: DbSession, session_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    """Segments per rendition of each session, in one query for a whole page (the gaps of
    an outage are no segments: they carry no media)."""
    rows = db.execute(
        select(Rendition.session_id, Rendition.name, func.count(Segment.id))
        .outerjoin(
            Segment, (Segment.rendition_id == Rendition.id) & (Segment.status != SegmentStatus.GAP)
        )
        .where(Rendition.session_id.in_(session_ids))
        .group_by(Rendition.session_id, Rendition.name)
    ).all()
    counts: dict[uuid.UUID, dict[str, int]] = defaultdict(dict)
    for session_id, name, count in rows:
        counts[session_id][name] = count
    return counts


@router.get(
    "/streams/{stream_id}/sessions", response_model=SessionPage, summary="Sessions, newest first"
)
def list_sessions(
    stream_id: uuid.UUID,
    db: DbSession,
    settings: SettingsDep,
    limit: PageLimit = 20,
    offset: PageOffset = 0,
) -> SessionPage:
    get_stream_or_404(db, stream_id)
    total = db.scalar(
        select(func.count()).select_from(LiveSession).where(LiveSession.stream_id == stream_id)
    )
    sessions = db.scalars(
        select(LiveSession)
        .where(LiveSession.stream_id == stream_id)
        .options(selectinload(LiveSession.renditions))
        .order_by(LiveSession.started_at.desc(), LiveSession.id)
        .limit(limit)
        .offset(offset)
    ).all()
    counts = _segment_counts(db, [s.id for s in sessions])
    return SessionPage.of(
        [SessionOut.build(s, counts[s.id], settings) for s in sessions],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/sessions/{session_id}", response_model=SessionOut)
def get_session(session_id: uuid.UUID, db: DbSession, settings: SettingsDep) -> SessionOut:
    session = db.get(LiveSession, session_id)
    if session is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"session {session_id} not found")
    return SessionOut.build(session, _segment_counts(db, [session.id])[session.id], settings)
