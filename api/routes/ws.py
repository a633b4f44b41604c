"""`/ws/streams/{stream_id}`: a `status` message at once, then the stream's events as they
happen (`status`, `segment`, `playlist`), and a `ping` when there is nothing to say.
`/ws/uploads/{upload_id}` the same for an upload (`status`, `progress`). `core.events`
defines every message.

Close codes: 4404 the stream or upload does not exist; 4429 the client read too slowly and
was dropped; 1013 the client's address already holds NEBULA_WS_MAX_CONNECTIONS_PER_IP
websockets here; 1009 (uvicorn's) a message above NEBULA_WS_MAX_MESSAGE_BYTES.
An unknown id is accepted and then closed with 4404 rather than refused at the handshake:
browsers report a refused handshake as 1006 only, and the player stops reconnecting on 4404.
Messages are hints: a client that reconnects resyncs from REST.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

from fastapi import APIRouter, WebSocket
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from api.ws import AddressSlots, EventHub, Subscriber
from core.db import session_scope
from core.events import PING_MESSAGE, StatusEvent, encode_event, stream_channel, upload_channel
from core.models import LiveSession, SessionStatus, Stream, StreamStatus
from packager.uploads import upload_status_message

router = APIRouter(tags=["websockets"])

CLOSE_UNKNOWN = 4404
CLOSE_TOO_SLOW = 4429
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_WAIT_SECONDS = 1.0


def current_status(database_url: str, stream_id: uuid.UUID) -> str | None:
    """The `status` message a client gets on connect; None for an unknown stream."""
    with session_scope(database_url) as db:
        stream = db.get(Stream, stream_id)
        if stream is None:
            return None
        session_id = db.scalar(
            select(LiveSession.id)
            .where(LiveSession.stream_id == stream_id, LiveSession.status == SessionStatus.LIVE)
            .order_by(LiveSession.started_at.desc())
            .limit(1)
        )
        return encode_event(StatusEvent(stream_id, StreamStatus(stream.status), session_id))


@router.websocket("/ws/streams/{stream_id}")
async def stream_events(websocket: WebSocket, stream_id: str) -> None:
    await _follow(websocket, "stream", stream_id, stream_channel, current_status)


@router.websocket("/ws/uploads/{upload_id}")
async def upload_events(websocket: WebSocket, upload_id: str) -> None:
    """A `status` message at once (status, progress, error, playback_url), then `progress`
    messages while processing and one last `status` when it is `ready` or `failed`."""
    settings = websocket.app.state.settings

    def current(database_url: str, parsed: uuid.UUID) -> str | None:
        return upload_status_message(database_url, settings, parsed)

    await _follow(websocket, "upload", upload_id, upload_channel, current)


async def _follow(
    websocket: WebSocket,
    kind: str,
    subject_id: str,
    channel_of: Callable[[str], str],
    current: Callable[[str, uuid.UUID], str | None],
) -> None:
    """The current state first, then the subject's channel until the client goes."""
    hub: EventHub = websocket.app.state.hub
    settings = websocket.app.state.settings
    slots: AddressSlots = websocket.app.state.ws_slots
    address = websocket.client.host if websocket.client else "unknown"
    with slots.held(address) as admitted:
        await websocket.accept()
        if not admitted:
            reason = (
                f"too many websockets from this address: at most {slots.limit} "
                "(NEBULA_WS_MAX_CONNECTIONS_PER_IP)"
            )
            await websocket.close(CLOSE_TRY_AGAIN_LATER, reason)
            return
        unknown = f"{kind} {subject_id[:40]} not found"  # a close reason holds 123 bytes
        try:
            parsed = uuid.UUID(subject_id)
        except ValueError:
            await websocket.close(CLOSE_UNKNOWN, unknown)
            return
        # Join before reading the state, so nothing published in between is missed.
        subscriber = hub.join(channel_of(str(parsed)))
        try:
            status = await run_in_threadpool(current, settings.database_url, parsed)
            if status is None:
                await websocket.close(CLOSE_UNKNOWN, unknown)
                return
            await websocket.send_text(status)
            await _serve(websocket, subscriber, settings.ws_ping_seconds)
        finally:
            hub.leave(subscriber)


async def _serve(websocket: WebSocket, subscriber: Subscriber, ping_seconds: float) -> None:
    """Until the client leaves, a send fails, or the client falls too far behind."""
    tasks = {
        asyncio.create_task(_forward(websocket, subscriber, ping_seconds)),
        asyncio.create_task(_until_closed(websocket)),
        overflow := asyncio.create_task(subscriber.overflowed.wait()),
    }
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    for task in done:
        if not task.cancelled():
            task.exception()  # a failed send only means the client went away
    if overflow in done:
        reason = f"too slow: more than {subscriber.queue.maxsize} messages waiting"
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.close(CLOSE_TOO_SLOW, reason), CLOSE_WAIT_SECONDS)


async def _forward(websocket: WebSocket, subscriber: Subscriber, ping_seconds: float) -> None:
    while True:
        try:
            message = await asyncio.wait_for(subscriber.queue.get(), ping_seconds)
        except TimeoutError:
            message = PING_MESSAGE
        await websocket.send_text(message)


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, to notice when it goes."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass
