"""Sans-IO RTMP server core: bytes in, events out, bytes to send out. No sockets here."""

from ingest.rtmp.chunks import (
    DEFAULT_MAX_CHUNK_SIZE,
    DEFAULT_MAX_CHUNK_STREAMS,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_PENDING_BYTES,
)
from ingest.rtmp.connection import (
    DEFAULT_MAX_RECEIVE_BUFFER,
    DEFAULT_OUT_CHUNK_SIZE,
    DEFAULT_WINDOW_ACK_SIZE,
    ServerConnection,
)
from ingest.rtmp.errors import (
    AmfError,
    ChunkStreamError,
    CommandError,
    HandshakeError,
    LimitExceededError,
    RtmpError,
    StateError,
)
from ingest.rtmp.events import (
    AudioMessage,
    Event,
    PublishEnded,
    PublishRequested,
    StreamMetadata,
    VideoMessage,
)

__all__ = [
    "DEFAULT_MAX_CHUNK_SIZE",
    "DEFAULT_MAX_CHUNK_STREAMS",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_PENDING_BYTES",
    "DEFAULT_MAX_RECEIVE_BUFFER",
    "DEFAULT_OUT_CHUNK_SIZE",
    "DEFAULT_WINDOW_ACK_SIZE",
    "AmfError",
    "AudioMessage",
    "ChunkStreamError",
    "CommandError",
    "Event",
    "HandshakeError",
    "LimitExceededError",
    "PublishEnded",
    "PublishRequested",
    "RtmpError",
    "ServerConnection",
    "StateError",
    "StreamMetadata",
    "VideoMessage",
]
