"""``ServerConnection``: the sans-IO RTMP server role for publishers.

Bytes go in with ``receive_data()``, which returns the events they complete; bytes to write
come out of ``data_to_send()``. Nothing here touches a socket, a clock or an event loop.

Command flow (what FFmpeg, OBS and librtmp clients do)::

    connect        -> Window Ack Size, Set Peer Bandwidth, Set Chunk Size, _result Success
    releaseStream  -> _result            FCPublish -> _result (both harmless, as SRS does)
    createStream   -> _result(stream id)
    publish        -> PublishRequested; parsing pauses until accept_publish() or
                      reject_publish(); then call receive_data(b"") to go on with
                      bytes that arrived meanwhile
    media/metadata -> AudioMessage, VideoMessage, StreamMetadata (only after accept)
    FCUnpublish / deleteStream / closeStream -> PublishEnded (once)

Audio, video and data messages that arrive before a publish was accepted are dropped: no
client we know sends them, and nothing could be done with them. One publish per connection.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from typing import Any

from ingest.rtmp import amf0
from ingest.rtmp.chunks import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_CHUNK_SIZE,
    DEFAULT_MAX_CHUNK_STREAMS,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_PENDING_BYTES,
    ChunkReader,
    ChunkWriter,
    RtmpMessage,
)
from ingest.rtmp.errors import (
    ChunkStreamError,
    CommandError,
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
from ingest.rtmp.handshake import HANDSHAKE_PACKET_SIZE, ServerHandshake
from ingest.rtmp.messages import (
    ACKNOWLEDGEMENT,
    AGGREGATE,
    AUDIO,
    COMMAND_AMF0,
    COMMAND_AMF3,
    DATA_AMF0,
    DATA_AMF3,
    LIMIT_DYNAMIC,
    PING_REQUEST,
    PING_RESPONSE,
    SET_CHUNK_SIZE,
    SET_PEER_BANDWIDTH,
    STREAM_BEGIN,
    USER_CONTROL,
    VIDEO,
    WINDOW_ACK_SIZE,
    Command,
    decode_command,
    encode_command,
    read_u32_payload,
    read_user_control,
    set_peer_bandwidth_payload,
    strip_amf3_format_byte,
    u32_payload,
    user_control_payload,
)

DEFAULT_MAX_RECEIVE_BUFFER = 1024 * 1024
# Largest command or data message before a publish is accepted: connect, createStream and
# publish are a few hundred bytes; an unauthenticated peer gets no more decoded than this.
DEFAULT_MAX_PREPUBLISH_AMF_SIZE = 64 * 1024
DEFAULT_OUT_CHUNK_SIZE = 4096
DEFAULT_WINDOW_ACK_SIZE = 5_000_000  # what nginx-rtmp announces

# Chunk stream ids we send on: protocol control, NetConnection commands, NetStream status.
CSID_PROTOCOL_CONTROL = 2
CSID_COMMAND = 3
CSID_STREAM_STATUS = 5

_FLV_TAG_HEADER = struct.Struct(">B3sI3s")  # type, size, timestamp + extension, stream id


class ServerConnection:
    """One RTMP client connection in the server role.

    Limits are enforced here, so every transport inherits them; exceeding one raises
    ``LimitExceededError``. Any ``RtmpError`` from ``receive_data`` closes the connection.
    """

    def __init__(
        self,
        *,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_chunk_streams: int = DEFAULT_MAX_CHUNK_STREAMS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        max_receive_buffer: int = DEFAULT_MAX_RECEIVE_BUFFER,
        max_prepublish_amf_size: int = DEFAULT_MAX_PREPUBLISH_AMF_SIZE,
        out_chunk_size: int = DEFAULT_OUT_CHUNK_SIZE,
        window_ack_size: int = DEFAULT_WINDOW_ACK_SIZE,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        largest_chunk = max_chunk_size + 18  # payload + biggest possible chunk header
        if max_receive_buffer < max(largest_chunk, 2 * HANDSHAKE_PACKET_SIZE + 1):
            raise ValueError(
                f"max_receive_buffer={max_receive_buffer} cannot hold one chunk "
                f"of max_chunk_size={max_chunk_size} or the handshake"
            )
        if not 1 <= out_chunk_size <= 0x7FFFFFFF:
            raise ValueError(f"out_chunk_size={out_chunk_size} is not in 1..2**31-1")
        self.max_receive_buffer = max_receive_buffer
        self._reader = ChunkReader(
            max_chunk_size=max_chunk_size,
            max_message_size=max_message_size,
            max_chunk_streams=max_chunk_streams,
            max_pending_bytes=max_pending_bytes,
        )
        self._reader.max_amf_message_size = min(max_prepublish_amf_size, max_message_size)
        self._reader.amf_limit_context = " before a publish is accepted"
        self._max_message_size = max_message_size
        self._handshake = ServerHandshake(random_bytes)
        self._writer = ChunkWriter(DEFAULT_CHUNK_SIZE)
        self._out_chunk_size = out_chunk_size
        self._window_ack_size = window_ack_size
        self._outgoing = bytearray()
        self._closed = False
        self.app: str | None = None
        self.tc_url: str | None = None
        self.connect_parameters: dict[str, Any] = {}
        self.publish_request: PublishRequested | None = None
        self.publish_stream_id: int | None = None
        self._awaiting_decision = False
        self._publishing = False
        self._publish_over = False
        self._next_stream_id = 1
        self.bytes_received = 0
        self._bytes_acknowledged = 0
        self._peer_window = 0

    # -- state the transport looks at -----------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once no more input will be processed: flush ``data_to_send()``, then close."""
        return self._closed

    @property
    def publishing(self) -> bool:
        return self._publishing

    @property
    def awaiting_publish_decision(self) -> bool:
        return self._awaiting_decision

    @property
    def handshake_used_digest(self) -> bool:
        """True when the client sent the Flash Player 9 digest handshake (FFmpeg, OBS)."""
        return self._handshake.uses_digest

    @property
    def buffered_bytes(self) -> int:
        """Received bytes held back unparsed (at most ``max_receive_buffer``)."""
        return len(self._reader.buffer)

    # -- bytes in, bytes out --------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes read from the socket; return the events they complete, in order."""
        if self._closed:
            return []
        buffer = self._reader.buffer
        buffer += data
        self.bytes_received += len(data)
        events: list[Event] = []
        try:
            if not self._handshake.done:
                self._outgoing += self._handshake.receive(buffer)
            if self._handshake.done and not self._awaiting_decision:
                self._read_messages(events)
            if (
                self._peer_window
                and self.bytes_received - self._bytes_acknowledged >= self._peer_window
            ):
                self._bytes_acknowledged = self.bytes_received
                self._send_control(ACKNOWLEDGEMENT, u32_payload(self.bytes_received))
            if len(buffer) > self.max_receive_buffer and not self._closed:
                raise LimitExceededError(
                    "receive buffer over its limit",
                    value=len(buffer),
                    expected=f"at most {self.max_receive_buffer} bytes",
                )
        except RtmpError:
            self._close_input()
            raise
        if self._closed:
            buffer.clear()
        return events

    def receive_eof(self) -> list[Event]:
        """The peer closed its side; returns ``PublishEnded`` if a publish was live."""
        self._closed = True
        self._reader.buffer.clear()
        return self._end_publish("connection closed")

    def data_to_send(self) -> bytes:
        """Bytes to write to the socket now (empty when there is nothing)."""
        if not self._outgoing:
            return b""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    # -- the caller's decisions -----------------------------------------------------------

    def accept_publish(self) -> None:
        """Let the pending publish go live: sends Stream Begin and NetStream.Publish.Start.

        Call ``receive_data(b"")`` afterwards to process bytes that arrived meanwhile.
        Does nothing if the connection closed in the meantime.
        """
        request = self._take_publish_decision()
        if request is None:
            return
        self._publishing = True
        self._reader.max_amf_message_size = self._max_message_size
        self._reader.amf_limit_context = ""
        stream_id = self.publish_stream_id or 0
        self._send_control(USER_CONTROL, user_control_payload(STREAM_BEGIN, stream_id))
        self._send_status(
            stream_id,
            "status",
            "NetStream.Publish.Start",
            f"{request.stream_name} is now published.",
            details=request.stream_name,
        )

    def reject_publish(self, description: str) -> None:
        """Refuse the pending publish with NetStream.Publish.BadName and close."""
        if self._take_publish_decision() is None:
            return
        self._publish_over = True
        self._send_status(
            self.publish_stream_id or 0, "error", "NetStream.Publish.BadName", description
        )
        self._close_input()

    def close(self, description: str = "Stream closed by the server.") -> list[Event]:
        """Drop the client from our side; sends NetStream.Unpublish.Success if publishing.

        Returns ``PublishEnded`` when a publish was live, so callers have one place to
        learn that a publish is over.
        """
        if self._closed:
            return []
        self._awaiting_decision = False
        if self._publishing and not self._publish_over:
            self._send_status(
                self.publish_stream_id or 0, "status", "NetStream.Unpublish.Success", description
            )
        events = self._end_publish("closed by server")
        self._close_input()
        return events

    def fail(self, description: str) -> list[Event]:
        """Drop a live publisher for what it sent (unreadable media, timestamps that cannot
        be placed): sends NetStream.Failed at level error, which FFmpeg prints as "Server
        error: <description>", and closes. Returns ``PublishEnded`` like ``close``."""
        if self._closed:
            return []
        self._awaiting_decision = False
        if self._publishing and not self._publish_over:
            self._send_status(self.publish_stream_id or 0, "error", "NetStream.Failed", description)
        events = self._end_publish("failed")
        self._close_input()
        return events

    def _take_publish_decision(self) -> PublishRequested | None:
        if self._awaiting_decision:
            self._awaiting_decision = False
            return self.publish_request
        if self._closed or self._publish_over:
            return None
        raise StateError(
            "no publish is waiting for a decision",
            value=self.publish_request,
            expected="a PublishRequested event first",
        )

    def _close_input(self) -> None:
        self._closed = True
        self._reader.buffer.clear()

    # -- incoming messages ----------------------------------------------------------------

    def _read_messages(self, events: list[Event]) -> None:
        reader = self._reader
        while True:
            messages = reader.read_messages(stop_after_command=True)
            if not messages:
                return
            publishing = self._publishing
            for message in messages:
                type_id = message.type_id
                if type_id == VIDEO:
                    if publishing:
                        events.append(VideoMessage(message.timestamp, message.payload))
                elif type_id == AUDIO:
                    if publishing:
                        events.append(AudioMessage(message.timestamp, message.payload))
                else:
                    self._other_message(message, events)
            last_type = messages[-1].type_id
            if last_type != COMMAND_AMF0 and last_type != COMMAND_AMF3:
                return  # the reader stopped because the buffer ran out
            if self._awaiting_decision or self._closed:
                return

    def _other_message(self, message: RtmpMessage, events: list[Event]) -> None:
        type_id = message.type_id
        payload = message.payload
        if type_id == COMMAND_AMF0:
            self._command(decode_command(payload), message.stream_id, events)
        elif type_id == COMMAND_AMF3:
            command = decode_command(strip_amf3_format_byte(payload, "AMF3 command"))
            self._command(command, message.stream_id, events)
        elif type_id == DATA_AMF0:
            self._data(payload, events)
        elif type_id == DATA_AMF3:
            self._data(strip_amf3_format_byte(payload, "AMF3 data message"), events)
        elif type_id == USER_CONTROL:
            event_type, event_data = read_user_control(payload)
            if event_type == PING_REQUEST:
                if len(event_data) < 4:
                    raise ChunkStreamError(
                        "ping request without a timestamp",
                        value=len(event_data),
                        expected="4 bytes",
                    )
                self._send_control(USER_CONTROL, PING_RESPONSE.to_bytes(2, "big") + event_data[:4])
        elif type_id == WINDOW_ACK_SIZE:
            self._peer_window = read_u32_payload(payload, "window acknowledgement size")
        elif type_id == SET_PEER_BANDWIDTH:
            window = read_u32_payload(payload, "set peer bandwidth")
            if window and window != self._window_ack_size:
                # The spec asks the receiver to answer a new bandwidth with its window.
                self._window_ack_size = window
                self._send_control(WINDOW_ACK_SIZE, u32_payload(window))
        elif type_id == ACKNOWLEDGEMENT:
            read_u32_payload(payload, "acknowledgement")
        elif type_id == AGGREGATE and self._publishing:
            self._aggregate(message, events)
        # Set Chunk Size and Abort were applied by the reader; shared objects and unknown
        # types are ignored.

    def _data(self, payload: bytes, events: list[Event]) -> None:
        if not self._publishing:
            return
        values = amf0.decode_values(payload)
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
            events.append(StreamMetadata(_kept_metadata(values[1])))

    def _aggregate(self, message: RtmpMessage, events: list[Event]) -> None:
        """Split an aggregate message (a run of FLV tags) into its audio/video/data parts."""
        payload = message.payload
        pos = 0
        first_timestamp: int | None = None
        while pos < len(payload):
            if pos + 11 > len(payload):
                raise ChunkStreamError(
                    "truncated tag header in an aggregate message",
                    value=len(payload) - pos,
                    expected="11 bytes",
                )
            tag_type, size_raw, stamp, _ = _FLV_TAG_HEADER.unpack_from(payload, pos)
            size = int.from_bytes(size_raw, "big")
            stamp = ((stamp >> 8) | ((stamp & 0xFF) << 24)) & 0xFFFFFFFF
            body_start = pos + 11
            body_end = body_start + size
            if body_end + 4 > len(payload):
                raise ChunkStreamError(
                    "aggregate tag runs past the message",
                    value=size,
                    expected=f"at most {len(payload) - body_start - 4}",
                )
            if first_timestamp is None:
                first_timestamp = stamp
            timestamp = (message.timestamp + stamp - first_timestamp) & 0xFFFFFFFF
            body = payload[body_start:body_end]
            if tag_type == VIDEO:
                events.append(VideoMessage(timestamp, body))
            elif tag_type == AUDIO:
                events.append(AudioMessage(timestamp, body))
            elif tag_type == DATA_AMF0:
                self._data(body, events)
            pos = body_end + 4

    def _command(self, command: Command, stream_id: int, events: list[Event]) -> None:
        name = command.name
        if name == "connect":
            self._connect(command)
            return
        if name in ("_result", "_error", "onStatus", "_checkbw", "onBWDone", "ping"):
            return  # answers to nothing we asked, or bandwidth probes: nothing to do
        if self.app is None:
            raise CommandError(f"{name!r} before connect", value=name, expected="connect first")
        txn = command.transaction_id
        if name == "createStream":
            new_stream_id = self._next_stream_id
            self._next_stream_id += 1
            self._send_command(CSID_COMMAND, 0, "_result", txn, None, float(new_stream_id))
        elif name == "publish":
            self._publish(command, stream_id, events)
        elif name in ("releaseStream", "FCPublish"):
            if txn:
                self._send_command(CSID_COMMAND, 0, "_result", txn, None, amf0.UNDEFINED)
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            if name == "FCUnpublish" and txn:
                self._send_command(CSID_COMMAND, 0, "_result", txn, None, amf0.UNDEFINED)
            events.extend(self._end_publish(name))
        elif name == "play":
            self._send_status(
                stream_id,
                "error",
                "NetStream.Play.StreamNotFound",
                "This server only accepts publishers.",
            )
            self._close_input()
        # Anything else (getStreamLength, FCSubscribe, custom calls) is ignored.

    def _connect(self, command: Command) -> None:
        if self.app is not None:
            raise CommandError(
                "second connect on one connection", value="connect", expected="one connect"
            )
        params = command.command_object
        if not isinstance(params, dict):
            raise CommandError(
                "connect without a command object", value=params, expected="an AMF0 object"
            )
        app = params.get("app", "")
        tc_url = params.get("tcUrl", "")
        if not isinstance(app, str) or not isinstance(tc_url, str):
            raise CommandError(
                "connect app/tcUrl are not strings", value=(app, tc_url), expected="AMF0 strings"
            )
        self.app = app
        self.tc_url = tc_url
        self.connect_parameters = dict(params)
        object_encoding = params.get("objectEncoding", 0.0)
        if not isinstance(object_encoding, float):
            object_encoding = 0.0
        window = self._window_ack_size
        self._send_control(WINDOW_ACK_SIZE, u32_payload(window))
        self._send_control(SET_PEER_BANDWIDTH, set_peer_bandwidth_payload(window, LIMIT_DYNAMIC))
        self._send_control(SET_CHUNK_SIZE, u32_payload(self._out_chunk_size))
        self._writer.chunk_size = self._out_chunk_size
        self._send_command(
            CSID_COMMAND,
            0,
            "_result",
            command.transaction_id,
            {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
            {
                "level": "status",
                "code": "NetConnection.Connect.Success",
                "description": "Connection succeeded.",
                "objectEncoding": object_encoding,
            },
        )

    def _publish(self, command: Command, stream_id: int, events: list[Event]) -> None:
        if self.publish_request is not None:
            self._send_status(
                stream_id,
                "error",
                "NetStream.Publish.BadConnection",
                "Only one publish per connection.",
            )
            return
        arguments = command.arguments
        stream_name = arguments[0] if arguments else None
        publish_type = arguments[1] if len(arguments) > 1 else "live"
        if not isinstance(stream_name, str):
            raise CommandError(
                "publish without a stream name", value=stream_name, expected="an AMF0 string"
            )
        if not isinstance(publish_type, str):
            publish_type = "live"
        without_query, _, query = stream_name.partition("?")
        request = PublishRequested(
            app=self.app or "",
            stream_name=stream_name,
            stream_name_without_query=without_query,
            query=query,
            publish_type=publish_type,
            tc_url=self.tc_url or "",
        )
        self.publish_request = request
        self.publish_stream_id = stream_id
        self._awaiting_decision = True
        events.append(request)

    def _end_publish(self, reason: str) -> list[Event]:
        if self._publishing and not self._publish_over:
            self._publishing = False
            self._publish_over = True
            return [PublishEnded(reason)]
        return []

    # -- outgoing messages ----------------------------------------------------------------

    def _send_control(self, type_id: int, payload: bytes) -> None:
        self._outgoing += self._writer.write(CSID_PROTOCOL_CONTROL, type_id, payload)

    def _send_command(
        self, csid: int, stream_id: int, name: str, txn: float, command_object: Any, *arguments: Any
    ) -> None:
        payload = encode_command(name, txn, command_object, *arguments)
        self._outgoing += self._writer.write(csid, COMMAND_AMF0, payload, stream_id=stream_id)

    def _send_status(
        self, stream_id: int, level: str, code: str, description: str, **extra: Any
    ) -> None:
        info = {"level": level, "code": code, "description": description, **extra}
        self._send_command(CSID_STREAM_STATUS, stream_id, "onStatus", 0.0, None, info)


METADATA_STRING_MAX = 256


def _kept_metadata(values: dict[str, Any]) -> dict[str, Any]:
    """The onMetaData entries safe to pass on: finite numbers and strings of at most 256
    characters (a publisher's NaN, infinity, huge string or nested object is dropped)."""
    return {name: value for name, value in values.items() if _safe_metadata_value(value)}


def _safe_metadata_value(value: object) -> bool:
    if isinstance(value, str):
        return len(value) <= METADATA_STRING_MAX
    return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)
