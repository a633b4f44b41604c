"""How playback travels over HTTP, the same from the API and from the bucket: content types,
cache lifetimes and the cross-origin (CORS) rule.

A CDN in front of either origin goes by these headers, so both say the same thing. A live
playlist is never cached past the configured age, so a new session that follows on the same
URL is seen at once. A recording's playlist may be cached once it holds EXT-X-ENDLIST; it is
not immutable, because a late rung result can still replace a gap in it. Media objects have
keys unique to their session and never change.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/iso.segment"
INIT_TYPE = "video/mp4"
MEDIA_CACHE = "public, max-age=31536000, immutable"
ENDLIST_TAG = "#EXT-X-ENDLIST"

# What a browser player (hls.js, Shaka, video.js) on another site needs: it only reads, may
# send Range (byte-range playlists, Safari's probes) and conditional requests, and reads
# the length and range of what came back.
CORS_METHODS = ("GET", "HEAD", "OPTIONS")
CORS_REQUEST_HEADERS = ("Range", "If-None-Match", "If-Modified-Since")
CORS_EXPOSED_HEADERS = ("Content-Length", "Content-Range", "Accept-Ranges", "ETag", "Age", "Date")
CORS_MAX_AGE_SECONDS = 600  # how long a browser may reuse a preflight answer


def media_type(name: str) -> str:
    """The content type of a media object by its name: a segment (.m4s) or an init section."""
    return SEGMENT_TYPE if name.endswith(".m4s") else INIT_TYPE


def live_playlist_cache(max_age: int) -> str:
    """Cache-Control of a playlist that can still change: `no-cache`, or a short max-age."""
    return f"public, max-age={max_age}" if max_age > 0 else "no-cache"


def playlist_cache(text: str, *, final_allowed: bool, live_max_age: int, final_max_age: int) -> str:
    """A playlist is cached long only where its URL can never show other media
    (`final_allowed`: a session's own recording) and its text is final (EXT-X-ENDLIST)."""
    if final_allowed and ENDLIST_TAG in text:
        return f"public, max-age={final_max_age}"
    return live_playlist_cache(live_max_age)


def bucket_cors_configuration(origins: Sequence[str]) -> bytes:
    """The S3 PutBucketCors document that lets pages on `origins` read the bucket's objects."""
    rule = "".join(
        [
            *(f"<AllowedOrigin>{escape(origin)}</AllowedOrigin>" for origin in origins),
            *(f"<AllowedMethod>{method}</AllowedMethod>" for method in ("GET", "HEAD")),
            *(f"<AllowedHeader>{header}</AllowedHeader>" for header in CORS_REQUEST_HEADERS),
            *(f"<ExposeHeader>{header}</ExposeHeader>" for header in CORS_EXPOSED_HEADERS),
            f"<MaxAgeSeconds>{CORS_MAX_AGE_SECONDS}</MaxAgeSeconds>",
        ]
    )
    return (
        '<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<CORSRule>{rule}</CORSRule></CORSConfiguration>"
    ).encode()
