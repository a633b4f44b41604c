"""RTMP chunk stream: reassembling messages from chunks, and cutting our messages into chunks.

The reader is the hot path (every media byte of every publisher passes through it), so it
works on one ``bytearray`` with ``struct.unpack_from`` at offsets, never loops per byte,
waits until a whole chunk is buffered before touching it, and joins a message's pieces once.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ingest.rtmp.errors import ChunkStreamError, LimitExceededError
from ingest.rtmp.messages import (
    ABORT,
    COMMAND_AMF0,
    COMMAND_AMF3,
    DATA_AMF0,
    DATA_AMF3,
    SET_CHUNK_SIZE,
    SHARED_OBJECT_AMF0,
    SHARED_OBJECT_AMF3,
)

DEFAULT_CHUNK_SIZE = 128  # every RTMP peer starts at 128 until Set Chunk Size
DEFAULT_MAX_CHUNK_SIZE = 65536
DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
DEFAULT_MAX_CHUNK_STREAMS = 64
DEFAULT_MAX_PENDING_BYTES = 16 * 1024 * 1024

MIN_CHUNK_STREAM_ID = 2
MAX_CHUNK_STREAM_ID = 65599
EXTENDED_TIMESTAMP = 0xFFFFFF

_CHUNK_LAYER_TYPES = frozenset((SET_CHUNK_SIZE, ABORT))  # applied inside the reader
_COMMAND_TYPES = frozenset((COMMAND_AMF0, COMMAND_AMF3))
# Messages decoded as AMF (or ignored shared objects): what `max_amf_message_size` bounds.
_AMF_TYPES = frozenset(
    (COMMAND_AMF0, COMMAND_AMF3, DATA_AMF0, DATA_AMF3, SHARED_OBJECT_AMF0, SHARED_OBJECT_AMF3)
)

_U32 = struct.Struct(">I").unpack_from
_U32_LE = struct.Struct("<I").unpack_from
_PACK_U32 = struct.Struct(">I").pack
_PACK_U32_LE = struct.Struct("<I").pack


class RtmpMessage(NamedTuple):
    """A reassembled message: ``timestamp`` is absolute (32-bit wrapping) in milliseconds."""

    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes
    chunk_stream_id: int


class _ChunkStream:
    """What a chunk stream remembers from its previous header, plus a message in progress."""

    __slots__ = (
        "timestamp",
        "delta",
        "length",
        "type_id",
        "stream_id",
        "extended",
        "remaining",
        "pieces",
    )

    def __init__(self) -> None:
        self.timestamp = 0
        self.delta = 0
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.extended = -1  # value of the last extended timestamp field, -1 when absent
        self.remaining = 0  # payload bytes still to come for the message in progress
        self.pieces: list[bytes] = []


class ChunkReader:
    """Turns the bytes in ``buffer`` into ``RtmpMessage`` objects.

    Set Chunk Size and Abort take effect inside the reader (the chunks after them depend
    on it); they are still returned so the caller can see them.

    ``max_amf_message_size`` bounds command, data and shared object messages apart from
    media (``max_message_size``); the connection keeps it small until a publish is accepted,
    so an unauthenticated peer cannot have megabytes of AMF decoded. Both are checked on a
    message's first header, before any of its payload is held.
    """

    def __init__(
        self,
        *,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_chunk_streams: int = DEFAULT_MAX_CHUNK_STREAMS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        self.buffer = bytearray()
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_chunk_size = max_chunk_size
        self.max_message_size = max_message_size
        self.max_chunk_streams = max_chunk_streams
        self.max_pending_bytes = max_pending_bytes
        self.max_amf_message_size = max_message_size
        self.amf_limit_context = ""  # said after the limit in the error, e.g. "before publish"
        self._streams: dict[int, _ChunkStream] = {}
        self._pending_bytes = 0  # declared sizes of the messages still being reassembled

    def read_messages(self, *, stop_after_command: bool = False) -> list[RtmpMessage]:
        """Parse every complete chunk in the buffer and return the messages they complete.

        With ``stop_after_command`` parsing stops right after a command message, so that
        the caller can act on it (e.g. pause on ``publish``) before later bytes are read.
        """
        buf = self.buffer
        end = len(buf)
        pos = 0
        messages: list[RtmpMessage] = []
        streams = self._streams
        chunk_size = self.chunk_size
        view = memoryview(buf)
        try:
            while pos < end:
                first = buf[pos]
                fmt = first >> 6
                csid = first & 0x3F
                p = pos + 1
                if csid < 2:
                    if csid == 0:
                        if p >= end:
                            break
                        csid = 64 + buf[p]
                        p += 1
                    else:
                        if p + 2 > end:
                            break
                        csid = 64 + buf[p] + (buf[p + 1] << 8)
                        p += 2
                state = streams.get(csid)

                if fmt == 3 and state is not None and state.remaining:
                    # Continuation of the message in progress: the hot path.
                    if state.extended >= 0:
                        # FFmpeg and librtmp repeat the extended timestamp here, some
                        # encoders do not: skip the 4 bytes only if they repeat it.
                        if p + 4 > end:
                            break
                        if _U32(buf, p)[0] == state.extended:
                            p += 4
                    remaining = state.remaining
                    take = remaining if remaining < chunk_size else chunk_size
                    stop = p + take
                    if stop > end:
                        break
                    append = state.pieces.append
                    append(view[p:stop].tobytes())
                    pos = stop
                    remaining -= take
                    if remaining and csid < 64 and state.extended < 0:
                        # Encoders send a message's continuations back to back: take the
                        # run of one-byte-header chunks here without the general dispatch.
                        while remaining and pos < end and buf[pos] == first:
                            take = remaining if remaining < chunk_size else chunk_size
                            stop = pos + 1 + take
                            if stop > end:
                                break
                            append(view[pos + 1 : stop].tobytes())
                            pos = stop
                            remaining -= take
                    state.remaining = remaining
                    if remaining:
                        continue
                    pieces = state.pieces
                    payload = b"".join(pieces)
                    state.pieces = []
                    self._pending_bytes -= state.length
                    type_id = state.type_id
                    messages.append(
                        RtmpMessage(type_id, state.stream_id, state.timestamp, payload, csid)
                    )
                    if type_id in _CHUNK_LAYER_TYPES:
                        chunk_size = self._apply_control(type_id, payload)
                    elif stop_after_command and type_id in _COMMAND_TYPES:
                        break
                    continue

                # First chunk of a new message: read the header into locals, commit to
                # the chunk stream state only once the whole chunk is buffered.
                extended = -1
                if fmt == 0:
                    if p + 11 > end:
                        break
                    stamp = _U32(buf, p - 1)[0] & 0xFFFFFF
                    length = _U32(buf, p + 2)[0] & 0xFFFFFF
                    type_id = buf[p + 6]
                    stream_id = _U32_LE(buf, p + 7)[0]
                    p += 11
                    if stamp == EXTENDED_TIMESTAMP:
                        if p + 4 > end:
                            break
                        stamp = extended = _U32(buf, p)[0]
                        p += 4
                    if state is None:
                        state = self._new_chunk_stream(csid)
                    elif state.remaining:
                        raise ChunkStreamError(
                            "type 0 header while a message is incomplete on the chunk stream",
                            value=csid,
                            expected=f"{state.remaining} more payload bytes first",
                        )
                    delta = stamp  # a type 3 after a type 0 repeats its timestamp as delta
                    timestamp = stamp
                else:
                    if state is None:
                        raise ChunkStreamError(
                            f"type {fmt} header on a chunk stream that has no previous header",
                            value=csid,
                            expected="a type 0 header first",
                        )
                    if state.remaining:
                        raise ChunkStreamError(
                            f"type {fmt} header while a message is incomplete on the stream",
                            value=csid,
                            expected=f"{state.remaining} more payload bytes first",
                        )
                    length = state.length
                    type_id = state.type_id
                    stream_id = state.stream_id
                    if fmt == 1:
                        if p + 7 > end:
                            break
                        delta = _U32(buf, p - 1)[0] & 0xFFFFFF
                        length = _U32(buf, p + 2)[0] & 0xFFFFFF
                        type_id = buf[p + 6]
                        p += 7
                    elif fmt == 2:
                        if p + 3 > end:
                            break
                        delta = _U32(buf, p - 1)[0] & 0xFFFFFF
                        p += 3
                    else:
                        delta = state.delta if state.extended < 0 else EXTENDED_TIMESTAMP
                    if delta == EXTENDED_TIMESTAMP:
                        if p + 4 > end:
                            break
                        delta = extended = _U32(buf, p)[0]
                        p += 4
                    timestamp = (state.timestamp + delta) & 0xFFFFFFFF

                if length > self.max_amf_message_size and type_id in _AMF_TYPES:
                    raise LimitExceededError(
                        f"AMF message (type {type_id}) larger than the limit",
                        value=length,
                        expected=f"at most {self.max_amf_message_size} bytes"
                        f"{self.amf_limit_context}",
                    )
                if length > self.max_message_size:
                    raise LimitExceededError(
                        "message larger than the limit",
                        value=length,
                        expected=f"at most {self.max_message_size} bytes",
                    )
                take = length if length < chunk_size else chunk_size
                stop = p + take
                if stop > end:
                    break
                state.timestamp = timestamp
                state.delta = delta
                state.length = length
                state.type_id = type_id
                state.stream_id = stream_id
                state.extended = extended
                pos = stop
                if take < length:
                    if self._pending_bytes + length > self.max_pending_bytes:
                        raise LimitExceededError(
                            "too many bytes in messages being reassembled",
                            value=self._pending_bytes + length,
                            expected=f"at most {self.max_pending_bytes}",
                        )
                    self._pending_bytes += length
                    state.pieces = [view[p:stop].tobytes()]
                    state.remaining = length - take
                    continue
                payload = view[p:stop].tobytes()
                messages.append(RtmpMessage(type_id, stream_id, timestamp, payload, csid))
                if type_id in _CHUNK_LAYER_TYPES:
                    chunk_size = self._apply_control(type_id, payload)
                elif stop_after_command and type_id in _COMMAND_TYPES:
                    break
        finally:
            view.release()
        if pos:
            del buf[:pos]
        return messages

    def _new_chunk_stream(self, csid: int) -> _ChunkStream:
        if len(self._streams) >= self.max_chunk_streams:
            raise LimitExceededError(
                "too many chunk streams",
                value=len(self._streams) + 1,
                expected=f"at most {self.max_chunk_streams}",
            )
        state = self._streams[csid] = _ChunkStream()
        return state

    def _apply_control(self, type_id: int, payload: bytes) -> int:
        """Apply Set Chunk Size or Abort; return the chunk size now in force."""
        if len(payload) < 4:
            raise ChunkStreamError(
                "protocol control message too short", value=len(payload), expected="4 bytes"
            )
        value = _U32(payload, 0)[0]
        if type_id == SET_CHUNK_SIZE:
            if value & 0x80000000 or value == 0:
                raise ChunkStreamError("invalid chunk size", value=value, expected="1 to 2**31-1")
            if value > self.max_chunk_size:
                raise LimitExceededError(
                    "peer chunk size larger than the limit",
                    value=value,
                    expected=f"at most {self.max_chunk_size}",
                )
            self.chunk_size = value
        else:
            state = self._streams.get(value)
            if state is not None and state.remaining:
                self._pending_bytes -= state.length
                state.remaining = 0
                state.pieces = []
        return self.chunk_size

    @property
    def buffered_bytes(self) -> int:
        return len(self.buffer)


def encode_basic_header(fmt: int, csid: int) -> bytes:
    """The 1, 2 or 3 byte basic header for a chunk stream id in 2..65599."""
    if csid < 64:
        if csid < MIN_CHUNK_STREAM_ID:
            raise ChunkStreamError(
                "chunk stream id out of range",
                value=csid,
                expected=f"{MIN_CHUNK_STREAM_ID}..{MAX_CHUNK_STREAM_ID}",
            )
        return bytes(((fmt << 6) | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    if csid > MAX_CHUNK_STREAM_ID:
        raise ChunkStreamError(
            "chunk stream id out of range",
            value=csid,
            expected=f"{MIN_CHUNK_STREAM_ID}..{MAX_CHUNK_STREAM_ID}",
        )
    rest = csid - 64
    return bytes(((fmt << 6) | 1, rest & 0xFF, rest >> 8))


class ChunkWriter:
    """Cuts outgoing messages into chunks: a type 0 header, then type 3 continuations.

    Extended timestamps are repeated on continuations, as FFmpeg and librtmp expect.
    """

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size

    def write(
        self, csid: int, type_id: int, payload: bytes, *, timestamp: int = 0, stream_id: int = 0
    ) -> bytes:
        timestamp &= 0xFFFFFFFF
        extended = timestamp >= EXTENDED_TIMESTAMP
        header = bytearray(encode_basic_header(0, csid))
        header += _PACK_U32(min(timestamp, EXTENDED_TIMESTAMP))[1:]
        header += _PACK_U32(len(payload))[1:]
        header.append(type_id)
        header += _PACK_U32_LE(stream_id)
        continuation = encode_basic_header(3, csid)
        if extended:
            stamp = _PACK_U32(timestamp)
            header += stamp
            continuation += stamp
        out = header
        size = self.chunk_size
        out += payload[:size]
        for offset in range(size, len(payload), size):
            out += continuation
            out += payload[offset : offset + size]
        return bytes(out)
