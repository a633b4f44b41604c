"""Redis pub/sub events, and with them the websocket contract: one channel per stream and one
per upload, each message one JSON object with a `type`.

`/ws/streams/{id}` sends a `StatusEvent` on connect, then forwards the stream's channel
(`StatusEvent`, `SegmentEvent`, `PlaylistEvent`); `/ws/uploads/{id}` sends an
`UploadStatusEvent` on connect, then forwards the upload's (`ProgressEvent`, and one last
`UploadStatusEvent`). Both send `PING_MESSAGE` when there is nothing to say. Each event's
`message()` is its JSON, key for key; publishers build events, never dicts, so this file is
the whole contract.

Subscribers must treat messages as hints and resync from REST after a reconnect: pub/sub
drops messages for a subscriber that is away, by design.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from redis import Redis, RedisError

from core.models import SegmentStatus, StreamStatus, UploadStatus

log = logging.getLogger(__name__)

RESUBSCRIBE_DELAY_SECONDS = 1.0


class EventType(StrEnum):
    STATUS = "status"
    SEGMENT = "segment"
    PLAYLIST = "playlist"
    PROGRESS = "progress"  # uploads only
    PING = "ping"  # websockets only: nothing happened for a while


CONTROL_CHANNEL = "nebula:control"


STREAM_CHANNEL_PREFIX = "nebula:stream:"
STREAM_CHANNEL_PATTERN = STREAM_CHANNEL_PREFIX + "*"
UPLOAD_CHANNEL_PATTERN = "nebula:upload:*"

# A websocket's keep-alive, so proxies and clients see the connection is alive.
PING_MESSAGE = json.dumps({"type": EventType.PING})


def stream_channel(stream_id: uuid.UUID | str) -> str:
    return f"{STREAM_CHANNEL_PREFIX}{stream_id}"


def upload_channel(upload_id: uuid.UUID | str) -> str:
    return f"nebula:upload:{upload_id}"


def _id(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def _with_set(message: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """`message` and those of the optional fields that are set: an unset one is absent from
    the JSON, not null."""
    return message | {name: value for name, value in optional.items() if value is not None}


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """The stream went live or idle; also the first message its websocket client gets.

    `{"type": "status", "stream_id": ID, "status": "idle" | "live" | "disabled",
    "session_id": ID | null, "resumed": bool}`: `session_id` is the live session (or the one
    that just ended), null when there is none; `resumed` (a publisher came back within the
    grace window, into the same session) only when going live.
    """

    stream_id: uuid.UUID
    status: StreamStatus
    session_id: uuid.UUID | None
    resumed: bool | None = None

    def message(self) -> dict[str, Any]:
        message = {
            "type": EventType.STATUS,
            "stream_id": str(self.stream_id),
            "status": self.status,
            "session_id": _id(self.session_id),
        }
        return _with_set(message, resumed=self.resumed)


@dataclass(frozen=True, slots=True)
class SegmentEvent:
    """A segment of one rendition is stored and its row committed: the source's as the ingest
    (or an upload job) makes it, each rung's as a ladder task does.

    `{"type": "segment", "stream_id": ID, "session_id": ID, "rendition": "720p",
    "sequence": 12, "duration": 2.0, "uri": "720p/00000012.m4s",
    "program_date_time": ISO 8601 | null, "status": "ready" | "failed"}`: `duration` in
    seconds, to the millisecond; `uri` the rendition and the segment's name; `status` only
    for a rung, where `failed` means an EXT-X-GAP in its playlist.
    """

    stream_id: uuid.UUID
    session_id: uuid.UUID
    rendition: str
    sequence: int
    duration: float
    uri: str
    program_date_time: datetime | None
    status: SegmentStatus | None = None

    def message(self) -> dict[str, Any]:
        message = {
            "type": EventType.SEGMENT,
            "stream_id": str(self.stream_id),
            "session_id": str(self.session_id),
            "rendition": self.rendition,
            "sequence": self.sequence,
            "duration": round(self.duration, 3),
            "uri": self.uri,
            "program_date_time": self.program_date_time and self.program_date_time.isoformat(),
        }
        return _with_set(message, status=self.status)


@dataclass(frozen=True, slots=True)
class PlaylistEvent:
    """The stream's playlists were rewritten in the bucket.

    `{"type": "playlist", "stream_id": ID, "uris": ["hls/ID/master.m3u8", ...]}`: the bucket
    keys written, sorted.
    """

    stream_id: uuid.UUID
    uris: tuple[str, ...]

    def message(self) -> dict[str, Any]:
        return {"type": EventType.PLAYLIST, "stream_id": str(self.stream_id), "uris": [*self.uris]}


@dataclass(frozen=True, slots=True)
class UploadStatusEvent:
    """The upload's state: the first message its websocket client gets, and the last, once
    it is `ready` or `failed`.

    `{"type": "status", "upload_id": ID, "status": "processing" | "ready" | "failed",
    "progress": 0.0-1.0, "error": str | null, "session_id": ID | null,
    "playback_url": URL | null}`: `progress` to four decimals, 1 when ready; `error` why it
    failed.
    """

    upload_id: uuid.UUID
    status: UploadStatus
    progress: float
    error: str | None
    session_id: uuid.UUID | None
    playback_url: str | None

    def state(self) -> dict[str, Any]:
        """The fields after `upload_id`, which the `upload.*` webhooks carry too."""
        return {
            "status": self.status,
            "progress": round(self.progress, 4),
            "error": self.error,
            "session_id": _id(self.session_id),
            "playback_url": self.playback_url,
        }

    def message(self) -> dict[str, Any]:
        return {"type": EventType.STATUS, "upload_id": str(self.upload_id), **self.state()}


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """The upload's work moved on: `{"type": "progress", "upload_id": ID, "progress": 0.0-1.0}`,
    to four decimals; it only grows, and stays below 1 until the `status` that says ready."""

    upload_id: uuid.UUID
    progress: float

    def message(self) -> dict[str, Any]:
        return {
            "type": EventType.PROGRESS,
            "upload_id": str(self.upload_id),
            "progress": round(self.progress, 4),
        }


Event = StatusEvent | SegmentEvent | PlaylistEvent | UploadStatusEvent | ProgressEvent


def encode_event(event: Event) -> str:
    """The JSON text subscribers receive."""
    return json.dumps(event.message())


def event_channel(event: Event) -> str:
    """An upload's events go on the upload's channel, the others on their stream's."""
    if isinstance(event, UploadStatusEvent | ProgressEvent):
        return upload_channel(event.upload_id)
    return stream_channel(event.stream_id)


def publish_event(redis: Redis, event: Event) -> int:
    """Publish on the event's channel and return how many subscribers received it."""
    return redis.publish(event_channel(event), encode_event(event))


class ControlAction(StrEnum):
    DISCONNECT = "disconnect"


def publish_control(redis: Redis, action: ControlAction, stream_id: str) -> int:
    """Tell every ingest process; the one holding the stream's publisher acts on it.

    Returns how many ingest processes heard it (0 means none is running)."""
    return redis.publish(
        CONTROL_CHANNEL, json.dumps({"action": action.value, "stream_id": stream_id})
    )


async def follow_channels(
    redis_url: str,
    on_message: Callable[[str, str], None],
    *,
    channels: Iterable[str] = (),
    patterns: Iterable[str] = (),
    on_subscribed: Callable[[], None] | None = None,
    on_lost: Callable[[], None] | None = None,
) -> None:
    """Until cancelled, hand every message as `on_message(channel, data)`.

    One connection for everything this process listens to. After a Redis fault it
    subscribes again (`on_lost`, then `on_subscribed` once it has); what was published in
    the gap is lost, as pub/sub always allows.
    """
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_keepalive=True)
    channels, patterns = list(channels), list(patterns)
    try:
        while True:
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    if channels:
                        await pubsub.subscribe(*channels)
                    if patterns:
                        await pubsub.psubscribe(*patterns)
                    if on_subscribed:
                        on_subscribed()
                    async for message in pubsub.listen():
                        on_message(message["channel"], message["data"])
            except (RedisError, OSError) as exc:
                if on_lost:
                    on_lost()
                log.warning("redis subscription lost (%s); subscribing again", exc)
                await asyncio.sleep(RESUBSCRIBE_DELAY_SECONDS)
    finally:
        await client.aclose()


async def stop_following(task: asyncio.Task[None], timeout: float = 5.0) -> None:
    """Stop a `follow_channels` task.

    redis-py's pub/sub reader can swallow a cancellation that lands while it reads, leaving
    the task running; cancelling again until it ends (within `timeout`) is what works.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.2)
    if not task.done():
        log.warning("redis subscription did not stop within %.0f s", timeout)
