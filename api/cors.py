"""Cross-origin access per part of the URL space.

Playback (`/hls/...`, the stream URLs and the recordings) is public and read-only, so pages
on any configured site may fetch it (hls.js, Shaka and video.js read over fetch/XHR, which
CORS governs; Safari's native `<video src>` does not need it). The management API carries
a bearer token and answers a browser on another site only when its origin is named.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from core.delivery import (
    CORS_EXPOSED_HEADERS,
    CORS_MAX_AGE_SECONDS,
    CORS_METHODS,
    CORS_REQUEST_HEADERS,
)

PLAYBACK_PREFIX = "/hls/"
API_PREFIX = "/api/"
API_METHODS = ("GET", "POST", "PATCH", "DELETE", "OPTIONS")
API_REQUEST_HEADERS = ("Authorization", "Content-Type")


class ScopedCors:
    """Starlette's CORS middleware, with its own origins, for each URL prefix that has any."""

    def __init__(self, app: ASGIApp, *, playback_origins: list[str], api_origins: list[str]):
        self.app = app
        self.scoped: list[tuple[str, CORSMiddleware]] = []
        if playback_origins:
            playback = CORSMiddleware(
                app,
                allow_origins=playback_origins,
                allow_methods=CORS_METHODS,
                allow_headers=CORS_REQUEST_HEADERS,
                expose_headers=CORS_EXPOSED_HEADERS,
                max_age=CORS_MAX_AGE_SECONDS,
            )
            self.scoped.append((PLAYBACK_PREFIX, playback))
        if api_origins:
            api = CORSMiddleware(
                app,
                allow_origins=api_origins,
                allow_methods=API_METHODS,
                allow_headers=API_REQUEST_HEADERS,
                max_age=CORS_MAX_AGE_SECONDS,
            )
            self.scoped.append((API_PREFIX, api))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for prefix, cors in self.scoped:
                if scope["path"].startswith(prefix):
                    await cors(scope, receive, send)
                    return
        await self.app(scope, receive, send)
