"""Events the RTMP server core hands to its caller: small immutable values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PublishRequested:
    """The client asked to publish; answer with ``accept_publish()`` or ``reject_publish()``.

    ``stream_name`` is exactly what the client sent (e.g. ``"key?token=x"``);
    ``stream_name_without_query`` is that up to the first ``?`` and ``query`` the rest.
    """

    app: str
    stream_name: str
    stream_name_without_query: str
    query: str
    publish_type: str
    tc_url: str


@dataclass(frozen=True, slots=True)
class PublishEnded:
    """The accepted publish is over (FCUnpublish, deleteStream, closeStream or EOF)."""

    reason: str


@dataclass(frozen=True, slots=True)
class StreamMetadata:
    """``@setDataFrame``/``onMetaData`` values (width, height, videocodecid, ...)."""

    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AudioMessage:
    """One FLV audio tag body; ``timestamp_ms`` is absolute, 32-bit wrapping."""

    timestamp_ms: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class VideoMessage:
    """One FLV video tag body; ``timestamp_ms`` is absolute (the DTS), 32-bit wrapping."""

    timestamp_ms: int
    payload: bytes


Event = PublishRequested | PublishEnded | StreamMetadata | AudioMessage | VideoMessage
