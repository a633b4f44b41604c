"""Where media lives: object keys, which mirror the URL paths under `/hls`.

Playlist URIs are relative and the keys follow the URL layout, so the same playlist text
works when served by the API (`/hls/...`) and when a CDN serves the bucket directly.
"""

from __future__ import annotations

import uuid

# Uploaded files belong to no stream: their sessions' media lives under `hls/uploads/`.
UPLOADS_NAMESPACE = "uploads"


def rendition_prefix(stream_id: uuid.UUID | str | None, rendition: str) -> str:
    return f"hls/{stream_id or UPLOADS_NAMESPACE}/{rendition}"


def segment_name(sequence: int) -> str:
    return f"{sequence:08d}.m4s"


def init_name(index: int) -> str:
    return f"init_{index}.mp4"


def media_key(
    stream_id: uuid.UUID | str | None, rendition: str, session_id: uuid.UUID | str, name: str
) -> str:
    return f"{rendition_prefix(stream_id, rendition)}/{session_id}/{name}"


def media_playlist_key(stream_id: uuid.UUID | str, rendition: str) -> str:
    return f"{rendition_prefix(stream_id, rendition)}/index.m3u8"


def master_playlist_key(stream_id: uuid.UUID | str) -> str:
    return f"hls/{stream_id}/master.m3u8"


def stream_prefix(stream_id: uuid.UUID | str) -> str:
    """Every object of a stream lives under this prefix."""
    return f"hls/{stream_id}/"


def recording_path(session_id: uuid.UUID | str) -> str:
    """URL path of one session's own recording, playable for as long as the session is kept."""
    return f"/hls/sessions/{session_id}/master.m3u8"
