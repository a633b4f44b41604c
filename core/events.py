"""Redis pub/sub events: one channel per stream, JSON messages with a `type`.

Subscribers must treat messages as hints and resync from REST after a reconnect: pub/sub
drops messages for a subscriber that is away, by design.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from redis import Redis


class EventType(StrEnum):
    STATUS = "status"
    SEGMENT = "segment"
    PLAYLIST = "playlist"


CONTROL_CHANNEL = "nebula:control"


def stream_channel(stream_id: str) -> str:
    return f"nebula:stream:{stream_id}"


def encode_event(event_type: EventType, stream_id: str, payload: dict[str, Any]) -> str:
    return json.dumps({"type": event_type.value, "stream_id": stream_id, **payload}, default=str)


def publish_event(
    redis: Redis, event_type: EventType, stream_id: str, payload: dict[str, Any]
) -> int:
    """Publish and return how many subscribers received it."""
    return redis.publish(stream_channel(stream_id), encode_event(event_type, stream_id, payload))
