"""HLS playback, public: playlists rendered from the database (media playlists kept by
version and served again until an event says they changed, `api.playlist_cache`), media
proxied from the bucket (what many viewers ask for at once fetched once, `api.media_cache`)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.orm import Session

from api.delivery import PlaylistBody, media_response, playlist_response
from api.deps import (
    DbSession,
    MediaCacheDep,
    PlaylistCacheDep,
    SettingsDep,
    SnapshotDb,
    StoreDep,
    StreamChangesDep,
    snapshot_session,
)
from api.media_cache import MediaCache
from api.playlist_cache import PlaylistCache
from core.delivery import media_type
from core.models import LiveSession
from core.settings import Settings
from core.storage import ObjectNotFoundError, ObjectStore
from media.ladder import NAME_PATTERN
from packager import catalog, playlist_versions, slate_uris
from packager.catalog import PlaylistPolicy
from packager.keys import media_key

router = APIRouter(prefix="/hls", tags=["playback"])

# Matched whole (fullmatch): `$` alone would let a trailing newline through.
MEDIA_NAME = re.compile(r"\d{8}\.m4s|init_\d+\.mp4")


def _read(path: str, summary: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A playback route: players may ask HEAD of anything they GET (Shaka does, to sniff).
    HEAD stays out of the OpenAPI document, where it would repeat the GET's operation id."""

    def register(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        router.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
        return router.get(path, summary=summary)(endpoint)

    return register


def _not_found(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=detail)


def _master(
    request: Request, settings: Settings, db: Session, session: LiveSession, *, recording: bool
) -> Response:
    text = catalog.servable_master(db, session)
    if text is None:
        raise _not_found(f"session {session.id} has no media yet")
    return playlist_response(request, settings, PlaylistBody(text), recording=recording)


@_read("/{stream_id}/master.m3u8", "Master playlist of the stream's latest session")
def master_playlist(
    request: Request, stream_id: uuid.UUID, db: DbSession, settings: SettingsDep
) -> Response:
    session = catalog.latest_session(db, stream_id)
    if session is None:
        raise _not_found(f"stream {stream_id} has no media yet")
    return _master(request, settings, db, session, recording=False)


@_read("/{stream_id}/{rendition}/index.m3u8", "Media playlist of one rendition")
async def media_playlist(
    request: Request,
    stream_id: uuid.UUID,
    rendition: str,
    settings: SettingsDep,
    cache: PlaylistCacheDep,
    changes: StreamChangesDep,
) -> Response:
    """Any rendition a master of the stream's live presentation lists: a session that lacks
    it (or a rung not transcoded yet) shows as EXT-X-GAP, never as a 404.

    A poll with no event of the stream since the last answer's snapshot is answered here,
    on the event loop; the others await one answer per URL and token, made in a thread."""
    url = f"{stream_id}/{rendition}"
    token = changes.token(stream_id)  # before the snapshot: an event after it moves it
    answer = partial(_stream_media, settings, cache, stream_id, rendition)
    body = await cache.answer(url, token, answer)
    return playlist_response(request, settings, body, recording=False)


def _stream_media(
    settings: Settings, cache: PlaylistCache, stream_id: uuid.UUID, rendition: str
) -> PlaylistBody:
    with snapshot_session(settings.database_url) as db:
        presentation = catalog.current_presentation(db, stream_id)
        if presentation is None or rendition not in presentation.renditions:
            raise _not_found(f"stream {stream_id} has no rendition {rendition!r}")
        policy = PlaylistPolicy(settings.segment_seconds, settings.playlist_window)
        return cache.body(
            lambda: playlist_versions.stream_media_version(db, presentation, rendition, policy),
            lambda: catalog.render_stream_media(db, presentation, rendition, policy).text,
        )


# The recording routes come before `media_object`: their paths have the same shape.
def _session_or_404(db: DbSession, session_id: uuid.UUID) -> LiveSession:
    session = db.get(LiveSession, session_id)
    if session is None:
        raise _not_found(f"session {session_id} not found")
    return session


@_read("/sessions/{session_id}/master.m3u8", "Master playlist of one session's recording")
def recording_master(
    request: Request, session_id: uuid.UUID, db: DbSession, settings: SettingsDep
) -> Response:
    return _master(request, settings, db, _session_or_404(db, session_id), recording=True)


@_read(
    "/sessions/{session_id}/{rendition}/index.m3u8",
    "Every segment of one rendition of a session's recording",
)
def recording_media(
    request: Request,
    session_id: uuid.UUID,
    rendition: str,
    db: SnapshotDb,
    settings: SettingsDep,
    cache: PlaylistCacheDep,
) -> Response:
    session = _session_or_404(db, session_id)
    found = catalog.find_rendition(db, session.id, rendition)
    if found is None:
        raise _not_found(f"session {session_id} has no rendition {rendition!r}")
    policy = PlaylistPolicy(settings.segment_seconds, settings.playlist_window)
    body = cache.body(
        lambda: playlist_versions.recording_version(db, session, rendition, policy),
        lambda: catalog.render_recording(db, session, found, policy),
    )
    return playlist_response(request, settings, body, recording=True)


@_read("/sessions/{session_id}/{rendition}/{name}", "A segment of a recording")
async def recording_object(
    request: Request,
    session_id: uuid.UUID,
    rendition: str,
    name: str,
    db: DbSession,
    store: StoreDep,
    media: MediaCacheDep,
) -> Response:
    session = await run_in_threadpool(_session_or_404, db, session_id)
    return await _media(request, store, media, session.stream_id, rendition, session_id, name)


@_read("/{stream_id}/{rendition}/slate/{slate_format}/{name}", "A slate segment or its init")
def slate_object(
    request: Request, stream_id: uuid.UUID, rendition: str, slate_format: str, name: str
) -> Response:
    """What the live playlists list for an outage: made from its path alone, the same for
    every stream (`packager.slate_uris`)."""
    data = slate_uris.render(slate_format, name) if NAME_PATTERN.fullmatch(rendition) else None
    if data is None:
        raise _not_found(f"no slate {slate_format}/{name}")
    return media_response(request, data, media_type(name))


@_read("/{stream_id}/{rendition}/{session_id}/{name}", "A segment or init segment")
async def media_object(
    request: Request,
    stream_id: uuid.UUID,
    rendition: str,
    session_id: uuid.UUID,
    name: str,
    store: StoreDep,
    media: MediaCacheDep,
) -> Response:
    return await _media(request, store, media, stream_id, rendition, session_id, name)


async def _media(
    request: Request,
    store: ObjectStore,
    media: MediaCache,
    stream_id: uuid.UUID,
    rendition: str,
    session_id: uuid.UUID,
    name: str,
) -> Response:
    if not MEDIA_NAME.fullmatch(name) or not NAME_PATTERN.fullmatch(rendition):
        raise _not_found(f"no media object {name!r}")
    key = media_key(stream_id, rendition, session_id, name)
    try:
        data = await media.get(key, partial(store.get_bytes, key))
    except ObjectNotFoundError:
        raise _not_found(f"no media object {name!r}") from None
    return media_response(request, data, media_type(name))
