"""RTMP message type ids, protocol control payloads and AMF0 command encoding."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from ingest.rtmp import amf0
from ingest.rtmp.errors import AmfError, ChunkStreamError, CommandError

# Message type ids (RTMP spec sections 5.4 and 7.1).
SET_CHUNK_SIZE = 1
ABORT = 2
ACKNOWLEDGEMENT = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
SHARED_OBJECT_AMF3 = 16
COMMAND_AMF3 = 17
DATA_AMF0 = 18
SHARED_OBJECT_AMF0 = 19
COMMAND_AMF0 = 20
AGGREGATE = 22

# User control event types (RTMP spec section 7.1.7).
STREAM_BEGIN = 0
STREAM_EOF = 1
STREAM_DRY = 2
SET_BUFFER_LENGTH = 3
STREAM_IS_RECORDED = 4
PING_REQUEST = 6
PING_RESPONSE = 7

# Set Peer Bandwidth limit types.
LIMIT_HARD = 0
LIMIT_SOFT = 1
LIMIT_DYNAMIC = 2

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")


def u32_payload(value: int) -> bytes:
    """Payload of Set Chunk Size, Abort, Acknowledgement and Window Acknowledgement Size."""
    return _U32.pack(value & 0xFFFFFFFF)


def set_peer_bandwidth_payload(window_size: int, limit_type: int = LIMIT_DYNAMIC) -> bytes:
    return _U32.pack(window_size) + bytes((limit_type,))


def user_control_payload(event_type: int, *values: int) -> bytes:
    return _U16.pack(event_type) + b"".join(_U32.pack(v & 0xFFFFFFFF) for v in values)


def read_u32_payload(payload: bytes, what: str) -> int:
    """The leading 32-bit big-endian field of a protocol control message."""
    if len(payload) < 4:
        raise ChunkStreamError(
            f"{what} message too short", value=len(payload), expected="at least 4 bytes"
        )
    return _U32.unpack_from(payload)[0]


def read_user_control(payload: bytes) -> tuple[int, bytes]:
    """Split a User Control message into its event type and event data."""
    if len(payload) < 2:
        raise ChunkStreamError(
            "user control message too short", value=len(payload), expected="at least 2 bytes"
        )
    return _U16.unpack_from(payload)[0], payload[2:]


@dataclass(frozen=True, slots=True)
class Command:
    """An AMF0 command message: name, transaction id, command object, further arguments."""

    name: str
    transaction_id: float
    command_object: Any
    arguments: tuple[Any, ...]


def encode_command(
    name: str, transaction_id: float, command_object: Any = None, *arguments: Any
) -> bytes:
    return amf0.encode_values(name, transaction_id, command_object, *arguments)


def decode_command(payload: bytes) -> Command:
    """Decode a type 20 payload (or type 17 after its leading format byte)."""
    values = amf0.decode_values(payload)
    if not values or not isinstance(values[0], str):
        raise CommandError(
            "command message does not start with a name",
            value=values[0] if values else None,
            expected="an AMF0 string",
        )
    name = values[0]
    transaction_id = values[1] if len(values) > 1 else 0.0
    if not isinstance(transaction_id, float):
        raise CommandError(
            f"{name!r} has a non-numeric transaction id",
            value=transaction_id,
            expected="an AMF0 number",
        )
    command_object = values[2] if len(values) > 2 else None
    return Command(name, transaction_id, command_object, tuple(values[3:]))


def strip_amf3_format_byte(payload: bytes, what: str) -> bytes:
    """Type 15/17 messages carry AMF0 after a leading 0 byte; anything else we refuse."""
    if not payload or payload[0] != 0:
        raise AmfError(
            f"{what} does not start with the AMF0 format byte",
            value=payload[:1],
            expected="b'\\x00'",
        )
    return payload[1:]
