"""The two requests every viewer repeats, a live media playlist and a segment of it, answered
without FastAPI's router and dependency solving.

Under viewers FastAPI's routing, dependency solving and request plumbing were over half of
the API's busy time (bench/viewer_load.py, py-spy): a poll answered from the playlist cache
costs little else. Here a GET of those two shapes is matched by one regex and given to the
route's own function (`api.routes.hls`) with what its dependencies would have given it, from
the app's state. Everything else goes through the app as before. What the route raises is
answered by the app's own exception handlers, as the app would (an `HTTPException`'s JSON
detail, a 503 for a service that is away), and the route is put in the scope, as the router
would, for `api.metrics`: clients and metrics see no difference but speed.
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from api.routes import hls

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_PART = r"[^/]+"
LIVE_PLAYLIST = re.compile(rf"/hls/(?P<stream_id>{_UUID})/(?P<rendition>{_PART})/index\.m3u8")
LIVE_MEDIA = re.compile(
    rf"/hls/(?P<stream_id>{_UUID})/(?P<rendition>{_PART})/(?P<session_id>{_UUID})/(?P<name>{_PART})"
)

Answer = Callable[[Request, re.Match[str]], Awaitable[Response]]


async def _live_playlist(request: Request, found: re.Match[str]) -> Response:
    state = request.app.state
    return await hls.media_playlist(
        request,
        uuid.UUID(found["stream_id"]),
        found["rendition"],
        state.settings,
        state.playlist_cache,
        state.stream_changes,
    )


async def _live_media(request: Request, found: re.Match[str]) -> Response:
    state = request.app.state
    return await hls.media_object(
        request,
        uuid.UUID(found["stream_id"]),
        found["rendition"],
        uuid.UUID(found["session_id"]),
        found["name"],
        state.store,
        state.media_cache,
    )


# What the router would have put in the scope: the route, with its path template.
_GET_ROUTES = {
    route.endpoint: route
    for route in hls.router.routes
    if isinstance(route, APIRoute) and "GET" in route.methods
}
_ANSWERS: tuple[tuple[re.Pattern[str], APIRoute, Answer], ...] = (
    (LIVE_PLAYLIST, _GET_ROUTES[hls.media_playlist], _live_playlist),
    (LIVE_MEDIA, _GET_ROUTES[hls.media_object], _live_media),
)


class PlaybackFastPath:
    """ASGI middleware; add it first (innermost), so CORS, metrics and the body limit still
    wrap what it answers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            for pattern, route, answer in _ANSWERS:
                found = pattern.fullmatch(path)
                if found is not None:
                    scope["route"] = route
                    request = Request(scope, receive)
                    try:
                        response = await answer(request, found)
                    except Exception as exc:  # noqa: BLE001 - answered as the app would
                        response = await _handled(request, exc)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


async def _handled(request: Request, exc: Exception) -> Response:
    """The response the app's handler for `exc` gives, looked up along its class's MRO as
    Starlette's exception middleware does (handlers by status code, which that middleware
    also reads, the app registers none of); without one, `exc` goes on up, to the server
    error middleware."""
    handlers = request.app.exception_handlers
    for kind in type(exc).__mro__:
        handler = handlers.get(kind)
        if handler is not None:
            response = handler(request, exc)
            return await response if inspect.isawaitable(response) else response
    raise exc
