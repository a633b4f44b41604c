"""Control messages from the API, heard by every ingest process; the one holding the
publisher acts. Pub/sub fits: a process that does not hold the stream just ignores it."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable

from core.events import CONTROL_CHANNEL, ControlAction, follow_channels

log = logging.getLogger(__name__)


def control_message_handler(disconnect: Callable[[uuid.UUID], bool]) -> Callable[[str, str], None]:
    """Turn raw control messages into calls; `disconnect` answers whether it held the stream."""

    def on_message(_channel: str, data: str) -> None:
        try:
            message = json.loads(data)
            action = ControlAction(message["action"])
            stream_id = uuid.UUID(message["stream_id"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignored a malformed control message %r: %s", data[:200], exc)
            return
        if action is ControlAction.DISCONNECT and disconnect(stream_id):
            log.info("stream %s: publisher disconnected on request", stream_id)

    return on_message


async def follow_control(redis_url: str, disconnect: Callable[[uuid.UUID], bool]) -> None:
    """Until cancelled: drop publishers of this process when the API asks."""
    await follow_channels(
        redis_url, control_message_handler(disconnect), channels=[CONTROL_CHANNEL]
    )
