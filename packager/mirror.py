"""Playlists mirrored into the bucket, so a CDN in front of it serves the same text as the API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from redis import Redis

from core.db import session_scope
from core.events import EventType, publish_event
from core.settings import Settings
from core.storage import ObjectStore
from packager import catalog
from packager.catalog import PlaylistPolicy
from packager.keys import master_playlist_key, media_playlist_key, segment_name

# Ingest and every worker write a stream's playlists; one at a time, so an older rendering
# never lands after a newer one.
LOCK_SECONDS = 10.0


def write_playlists(
    settings: Settings,
    store: ObjectStore,
    redis: Redis,
    stream_id: uuid.UUID | str,
    *,
    master: bool,
) -> None:
    """Render the stream's current playlists from the database and put them in the bucket."""
    policy = PlaylistPolicy(settings.segment_seconds, settings.playlist_window)
    lock = redis.lock(
        f"nebula:playlists:{stream_id}", timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS
    )
    with lock:
        with session_scope(settings.database_url) as db:
            presentation = catalog.current_presentation(db, uuid.UUID(str(stream_id)))
            if presentation is None:
                return
            texts = {
                media_playlist_key(stream_id, name): catalog.render_stream_media(
                    db, presentation, name, policy
                ).text
                for name in sorted(presentation.renditions)
            }
            renditions = list(presentation.sessions[-1].renditions)
            if master and renditions:
                texts[master_playlist_key(stream_id)] = catalog.render_master(renditions)
        for key, text in texts.items():
            store.put_bytes(key, text.encode(), "application/vnd.apple.mpegurl")
    publish_event(redis, EventType.PLAYLIST, str(stream_id), {"uris": sorted(texts)})


def announce_segment(
    redis: Redis,
    stream_id: uuid.UUID,
    session_id: uuid.UUID,
    rendition: str,
    sequence: int,
    duration: float,
    program_date_time: datetime | None,
    **extra: Any,
) -> None:
    """The `segment` event, one shape for the source and every rung."""
    publish_event(
        redis,
        EventType.SEGMENT,
        str(stream_id),
        {
            "session_id": str(session_id),
            "rendition": rendition,
            "sequence": sequence,
            "duration": round(duration, 3),
            "uri": f"{rendition}/{segment_name(sequence)}",
            "program_date_time": program_date_time.isoformat() if program_date_time else None,
            **extra,
        },
    )
