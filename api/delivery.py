"""Playback responses as HTTP caches and players want them.

Playlists: gzip when the client takes it (Apple's authoring spec requires it; a recording's
EVENT playlist holds every segment and is polled every target duration), an ETag so a
`no-cache` revalidation costs a 304, and a Cache-Control chosen from the URL and the text.
Media: single byte ranges, which Safari and some players ask for.
"""

from __future__ import annotations

import gzip
import hashlib

from fastapi import Request, status
from fastapi.responses import Response

from core.delivery import MEDIA_CACHE, PLAYLIST_TYPE, playlist_cache
from core.settings import Settings

# Fast and still about 10:1 on playlist text, whose lines repeat.
GZIP_LEVEL = 5


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value allows gzip (`gzip` or `*`, and not `q=0`)."""
    for item in accept_encoding.lower().split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        if coding in ("gzip", "x-gzip", "*"):
            weight = next((p[2:] for p in params if p.startswith("q=")), "1")
            try:
                return float(weight) > 0
            except ValueError:
                return False
    return False


class PlaylistBody:
    """A playlist's text as it is served: its bytes, ETag, and gzip (made when first asked)."""

    __slots__ = ("_gzipped", "data", "etag", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.data = text.encode()
        self.etag = f'W/"{hashlib.blake2b(self.data, digest_size=12).hexdigest()}"'
        self._gzipped: bytes | None = None

    def gzipped(self) -> bytes:
        if self._gzipped is None:
            self._gzipped = gzip.compress(self.data, GZIP_LEVEL, mtime=0)
        return self._gzipped

    @property
    def size(self) -> int:
        """What it holds in memory, roughly: the text, its bytes and their gzip."""
        return len(self.text) + len(self.data) + len(self._gzipped or b"")


def playlist_response(
    request: Request, settings: Settings, body: PlaylistBody, *, recording: bool
) -> Response:
    """`recording`: the URL is one session's own (`/hls/sessions/...`), never another's."""
    headers = {
        "Cache-Control": playlist_cache(
            body.text,
            final_allowed=recording,
            live_max_age=settings.live_playlist_max_age,
            final_max_age=settings.ended_playlist_max_age,
        ),
        "ETag": body.etag,
        "Vary": "Accept-Encoding",
    }
    if body.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    if accepts_gzip(request.headers.get("accept-encoding", "")):
        headers["Content-Encoding"] = "gzip"
        return Response(body.gzipped(), media_type=PLAYLIST_TYPE, headers=headers)
    return Response(body.data, media_type=PLAYLIST_TYPE, headers=headers)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The [start, end) one `Range: bytes=...` asks of `size` bytes; None to send it whole
    (no header, several ranges, or a form we do not read, all of which HTTP lets us ignore).
    Raises ValueError when the range lies wholly past the end (416)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, dash, last = header[len("bytes=") :].strip().partition("-")
    well_formed = all(part == "" or part.isdigit() for part in (first, last))
    if not dash or not well_formed or not (first or last):
        return None
    if not first:  # the last `last` bytes
        if int(last) == 0:
            raise ValueError(f"an empty suffix range of a {size}-byte object")
        return max(0, size - int(last)), size
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if start >= size:
        raise ValueError(f"range starts at {start}, past the {size}-byte object")
    if end <= start:
        return None
    return start, end


def media_response(request: Request, data: bytes, media_type: str) -> Response:
    """A whole segment or init segment, or the one range asked of it."""
    headers = {"Cache-Control": MEDIA_CACHE, "Accept-Ranges": "bytes"}
    try:
        wanted = byte_range(request.headers.get("range"), len(data))
    except ValueError:
        headers["Content-Range"] = f"bytes */{len(data)}"
        return Response(status_code=status.HTTP_416_RANGE_NOT_SATISFIABLE, headers=headers)
    if wanted is None:
        return Response(data, media_type=media_type, headers=headers)
    start, end = wanted
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
    return Response(
        data[start:end],
        status_code=status.HTTP_206_PARTIAL_CONTENT,
        media_type=media_type,
        headers=headers,
    )
