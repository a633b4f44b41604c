"""HLS playback, public: playlists rendered from the database, media proxied from the bucket."""

from __future__ import annotations

import re
import uuid

from fastapi import APIRouter, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from api.deps import DbSession, SettingsDep, StoreDep
from core.models import LiveSession
from core.storage import ObjectStore
from packager import catalog
from packager.catalog import PlaylistPolicy
from packager.keys import media_key

router = APIRouter(prefix="/hls", tags=["playback"])

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
MEDIA_NAME = re.compile(r"^(?:\d{8}\.m4s|init_\d+\.mp4)$")
RENDITION_NAME = re.compile(r"^[a-z0-9]{1,32}$")
# Live playlists change every segment; ended ones never do. Media objects never change.
LIVE_PLAYLIST_CACHE = "public, max-age=1"
ENDED_PLAYLIST_CACHE = "public, max-age=3600"
MEDIA_CACHE = "public, max-age=31536000, immutable"


def _not_found(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=detail)


def _playlist(text: str, ended: bool) -> Response:
    return Response(
        text,
        media_type=PLAYLIST_TYPE,
        headers={"Cache-Control": ENDED_PLAYLIST_CACHE if ended else LIVE_PLAYLIST_CACHE},
    )


@router.get("/{stream_id}/master.m3u8", summary="Master playlist of the stream's latest session")
def master_playlist(stream_id: uuid.UUID, db: DbSession) -> Response:
    session = catalog.latest_session(db, stream_id)
    renditions = [r for r in session.renditions] if session else []
    if not renditions:
        raise _not_found(f"stream {stream_id} has no media yet")
    presentation = catalog.current_presentation(db, stream_id)
    ended = presentation is None or presentation.ended
    return _playlist(catalog.render_master(renditions), ended)


@router.get("/{stream_id}/{rendition}/index.m3u8", summary="Media playlist of one rendition")
def media_playlist(
    stream_id: uuid.UUID, rendition: str, db: DbSession, settings: SettingsDep
) -> Response:
    """Any rendition a master of the stream's live presentation lists: a session that lacks
    it (or a rung not transcoded yet) shows as EXT-X-GAP, never as a 404."""
    presentation = catalog.current_presentation(db, stream_id)
    if presentation is None or rendition not in presentation.renditions:
        raise _not_found(f"stream {stream_id} has no rendition {rendition!r}")
    policy = PlaylistPolicy(settings.segment_seconds, settings.playlist_window)
    listing = catalog.render_stream_media(db, presentation, rendition, policy)
    return _playlist(listing.text, listing.ended)


# The recording routes come before `media_object`: their paths have the same shape.
def _session_or_404(db: DbSession, session_id: uuid.UUID) -> LiveSession:
    session = db.get(LiveSession, session_id)
    if session is None:
        raise _not_found(f"session {session_id} not found")
    return session


@router.get(
    "/sessions/{session_id}/master.m3u8", summary="Master playlist of one session's recording"
)
def recording_master(session_id: uuid.UUID, db: DbSession) -> Response:
    session = _session_or_404(db, session_id)
    if not session.renditions:
        raise _not_found(f"session {session_id} has no media")
    return _playlist(catalog.render_master(list(session.renditions)), session.status != "live")


@router.get(
    "/sessions/{session_id}/{rendition}/index.m3u8",
    summary="Every segment of one rendition of a session's recording",
)
def recording_media(
    session_id: uuid.UUID, rendition: str, db: DbSession, settings: SettingsDep
) -> Response:
    session = _session_or_404(db, session_id)
    found = catalog.find_rendition(db, session.id, rendition)
    if found is None:
        raise _not_found(f"session {session_id} has no rendition {rendition!r}")
    policy = PlaylistPolicy(settings.segment_seconds, settings.playlist_window)
    return _playlist(catalog.render_recording(db, session, found, policy), session.status != "live")


@router.get("/sessions/{session_id}/{rendition}/{name}", summary="A segment of a recording")
async def recording_object(
    session_id: uuid.UUID, rendition: str, name: str, db: DbSession, store: StoreDep
) -> Response:
    session = await run_in_threadpool(_session_or_404, db, session_id)
    return await _media(store, session.stream_id, rendition, session_id, name)


@router.get("/{stream_id}/{rendition}/{session_id}/{name}", summary="A segment or init segment")
async def media_object(
    stream_id: uuid.UUID, rendition: str, session_id: uuid.UUID, name: str, store: StoreDep
) -> Response:
    return await _media(store, stream_id, rendition, session_id, name)


async def _media(
    store: ObjectStore, stream_id: uuid.UUID, rendition: str, session_id: uuid.UUID, name: str
) -> Response:
    if not MEDIA_NAME.match(name) or not RENDITION_NAME.match(rendition):
        raise _not_found(f"no media object {name!r}")
    key = media_key(stream_id, rendition, session_id, name)
    try:
        data = await run_in_threadpool(store.get_bytes, key)
    except KeyError:
        raise _not_found(f"no media object {name!r}") from None
    media_type = "video/iso.segment" if name.endswith(".m4s") else "video/mp4"
    return Response(data, media_type=media_type, headers={"Cache-Control": MEDIA_CACHE})
