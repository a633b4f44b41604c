"""Playlists mirrored into the bucket, so a CDN in front of it serves the same text as the API,
and the events that tell listeners a segment is there."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from datetime import datetime

from celery import Celery
from redis import Redis

from core.db import session_scope
from core.delivery import MEDIA_CACHE, PLAYLIST_TYPE, live_playlist_cache, media_type
from core.events import PlaylistEvent, SegmentEvent, publish_event
from core.models import SegmentStatus
from core.settings import Settings
from core.storage import ObjectStore
from packager import catalog, slate_uris
from packager.catalog import PlaylistPolicy
from packager.keys import (
    master_playlist_key,
    media_playlist_key,
    rendition_prefix,
    segment_name,
)
from packager.ladder_rows import RungOutcome, SourceSegment
from packager.uploads import advance_upload

# Ingest and every worker write a stream's playlists; one at a time, so an older rendering
# never lands after a newer one.
LOCK_SECONDS = 10.0


def write_playlists(
    settings: Settings,
    store: ObjectStore,
    redis: Redis,
    stream_id: uuid.UUID,
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
            rendered = {
                name: catalog.render_stream_media(db, presentation, name, policy)
                for name in sorted(presentation.renditions)
            }
            texts = {media_playlist_key(stream_id, n): r.text for n, r in rendered.items()}
            session = presentation.sessions[-1]
            master_text = catalog.servable_master(db, session) if master else None
            if master_text is not None:
                texts[master_playlist_key(stream_id)] = master_text
        for name, playlist in rendered.items():
            _mirror_slates(store, rendition_prefix(stream_id, name), playlist.slates)
        # The stream's URLs follow each new session: never cached past a live playlist's age.
        cache = live_playlist_cache(settings.live_playlist_max_age)
        for key, text in texts.items():
            store.put_bytes(key, text.encode(), PLAYLIST_TYPE, cache_control=cache)
    publish_event(redis, PlaylistEvent(stream_id, tuple(sorted(texts))))


# Slate objects this process has put: the same bytes under the same keys, so one PUT each.
_mirrored_slates: OrderedDict[str, None] = OrderedDict()
MIRRORED_SLATES_KEPT = 4096


def _mirror_slates(store: ObjectStore, prefix: str, uris: tuple[str, ...]) -> None:
    """Put the slate objects a mirrored playlist lists beside it, so a CDN serving the
    bucket finds them where the API would make them."""
    for uri in uris:
        key = f"{prefix}/{uri}"
        if key in _mirrored_slates:
            continue
        token, _, name = uri.removeprefix(slate_uris.SLATE_DIR + "/").partition("/")
        data = slate_uris.render(token, name)
        if data is None:  # every listed URI names a slate: a bug if not
            raise ValueError(f"playlist lists {uri!r}, which is no slate")
        store.put_bytes(key, data, media_type(name), cache_control=MEDIA_CACHE)
        _mirrored_slates[key] = None
        if len(_mirrored_slates) > MIRRORED_SLATES_KEPT:
            _mirrored_slates.popitem(last=False)


def announce_segment(
    redis: Redis,
    stream_id: uuid.UUID,
    session_id: uuid.UUID,
    rendition: str,
    sequence: int,
    duration: float,
    program_date_time: datetime | None,
    status: SegmentStatus | None = None,
) -> None:
    """The `segment` event, one shape for the source and every rung (only a rung's has a
    `status`)."""
    uri = f"{rendition}/{segment_name(sequence)}"
    publish_event(
        redis,
        SegmentEvent(
            stream_id, session_id, rendition, sequence, duration, uri, program_date_time, status
        ),
    )


def publish_rungs(
    settings: Settings,
    store: ObjectStore,
    redis: Redis,
    celery: Celery,
    source: SourceSegment,
    outcomes: list[RungOutcome],
) -> None:
    """After committing a source segment's rung rows: a stream's playlists are mirrored and
    each rung announced; an upload's progress moves (it has no live playlists, no stream)."""
    if source.stream_id is None:
        advance_upload(settings, redis, celery, source.session_id)
        return
    write_playlists(settings, store, redis, source.stream_id, master=True)
    for outcome in outcomes:
        announce_segment(
            redis,
            source.stream_id,
            source.session_id,
            outcome.rung.name,
            source.sequence,
            source.duration,
            source.program_date_time,
            status=outcome.status,
        )
