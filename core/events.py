"""Redis pub/sub events: one channel per stream and one per upload, JSON messages with a `type`.

Subscribers must treat messages as hints and resync from REST after a reconnect: pub/sub
drops messages for a subscriber that is away, by design.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from redis import Redis, RedisError

log = logging.getLogger(__name__)

RESUBSCRIBE_DELAY_SECONDS = 1.0


class EventType(StrEnum):
    STATUS = "status"
    SEGMENT = "segment"
    PLAYLIST = "playlist"
    PROGRESS = "progress"  # uploads only


CONTROL_CHANNEL = "nebula:control"


STREAM_CHANNEL_PATTERN = "nebula:stream:*"
UPLOAD_CHANNEL_PATTERN = "nebula:upload:*"


def stream_channel(stream_id: str) -> str:
    return f"nebula:stream:{stream_id}"


def upload_channel(upload_id: str) -> str:
    return f"nebula:upload:{upload_id}"


def encode_event(event_type: EventType, stream_id: str, payload: dict[str, Any]) -> str:
    return json.dumps({"type": event_type.value, "stream_id": stream_id, **payload}, default=str)


def encode_upload_event(event_type: EventType, upload_id: str, payload: dict[str, Any]) -> str:
    return json.dumps({"type": event_type.value, "upload_id": upload_id, **payload}, default=str)


def publish_upload_event(
    redis: Redis, event_type: EventType, upload_id: str, payload: dict[str, Any]
) -> int:
    return redis.publish(
        upload_channel(upload_id), encode_upload_event(event_type, upload_id, payload)
    )


def publish_event(
    redis: Redis, event_type: EventType, stream_id: str, payload: dict[str, Any]
) -> int:
    """Publish and return how many subscribers received it."""
    return redis.publish(stream_channel(stream_id), encode_event(event_type, stream_id, payload))


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
) -> None:
    """Until cancelled, hand every message as `on_message(channel, data)`.

    One connection for everything this process listens to. After a Redis fault it
    subscribes again; what was published in the gap is lost, as pub/sub always allows.
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
