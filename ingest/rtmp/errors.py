"""The one exception family of the RTMP core.

Every malformed input the core can be fed ends in an ``RtmpError`` subclass; nothing else
(``IndexError``, ``struct.error``, ``UnicodeDecodeError``...) escapes ``receive_data``.
After an ``RtmpError`` from ``ServerConnection.receive_data`` the connection is closed: the
transport should flush ``data_to_send()`` and drop the socket.
"""

from __future__ import annotations

from typing import Any

_UNSET: Any = object()


class RtmpError(Exception):
    """Base class: ``value`` is what was found, ``expected`` what the protocol wanted."""

    def __init__(self, message: str, *, value: Any = _UNSET, expected: Any = _UNSET) -> None:
        self.message = message
        self.value = None if value is _UNSET else value
        self.expected = None if expected is _UNSET else expected
        detail = message
        if value is not _UNSET:
            detail += f" (got {value!r}"
            detail += f", expected {expected})" if expected is not _UNSET else ")"
        elif expected is not _UNSET:
            detail += f" (expected {expected})"
        super().__init__(detail)


class HandshakeError(RtmpError):
    """C0/C1/C2 were not what an RTMP client sends."""


class ChunkStreamError(RtmpError):
    """Chunk framing or a protocol control message is malformed."""


class AmfError(RtmpError):
    """AMF0 bytes do not decode, or a value cannot be encoded."""


class CommandError(RtmpError):
    """The peer sent a command that is malformed or out of order."""


class LimitExceededError(RtmpError):
    """A configured limit (message size, chunk size, buffer, ...) was exceeded."""


class StateError(RtmpError):
    """The caller used the connection API out of order (our fault, not the peer's)."""
