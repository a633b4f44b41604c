import struct

import pytest

from ingest.rtmp import (
    DEFAULT_OUT_CHUNK_SIZE,
    AudioMessage,
    CommandError,
    LimitExceededError,
    PublishEnded,
    PublishRequested,
    ServerConnection,
    StateError,
    StreamMetadata,
    VideoMessage,
    amf0,
)
from tests.fixtures.rtmp.client_bytes import (
    HANDSHAKE_SIZE,
    ServerOutput,
    chunk,
    command,
    connected,
    message_chunks,
    plain_c0c1,
    publishing,
)

AVC_HEADER = b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f"
AAC_HEADER = b"\xaf\x00\x12\x10"


def server_output(conn: ServerConnection) -> ServerOutput:
    output = ServerOutput(handshake_done=True)
    if conn.app is not None:  # connect switched our chunk size
        output.reader.chunk_size = DEFAULT_OUT_CHUNK_SIZE
    output.feed(conn.data_to_send())
    return output


def test_connect_is_answered_with_window_bandwidth_chunk_size_and_success():
    conn = ServerConnection()
    conn.receive_data(plain_c0c1() + b"\x00" * HANDSHAKE_SIZE)
    conn.receive_data(
        message_chunks(
            3,
            20,
            command(
                "connect", 1.0, {"app": "live", "tcUrl": "rtmp://host/live", "objectEncoding": 0.0}
            ),
        )
    )
    output = ServerOutput()
    output.feed(conn.data_to_send())
    assert [m.type_id for m in output.messages] == [5, 6, 1, 20]
    assert struct.unpack(">I", output.messages[0].payload)[0] == 5_000_000
    assert output.messages[1].payload[4] == 2  # dynamic limit
    assert output.reader.chunk_size == 4096
    ((stream_id, values),) = output.commands()
    assert values[:2] == ["_result", 1.0]
    assert values[3]["code"] == "NetConnection.Connect.Success"
    assert (conn.app, conn.tc_url) == ("live", "rtmp://host/live")


def test_release_stream_fcpublish_and_create_stream_get_results():
    conn = connected()
    conn.data_to_send()
    conn.receive_data(
        message_chunks(3, 20, command("releaseStream", 2.0, None, "key"))
        + message_chunks(3, 20, command("FCPublish", 3.0, None, "key"))
        + message_chunks(3, 20, command("createStream", 4.0))
    )
    values = [v for _, v in server_output(conn).commands()]
    assert [(v[0], v[1]) for v in values] == [("_result", 2.0), ("_result", 3.0), ("_result", 4.0)]
    assert values[2][3] == 1.0


def test_publish_reports_the_name_exactly_as_sent_and_without_its_query():
    _, events = publishing("abc123?token=xyz&x=1", accept=False)
    assert events == [
        PublishRequested(
            app="live",
            stream_name="abc123?token=xyz&x=1",
            stream_name_without_query="abc123",
            query="token=xyz&x=1",
            publish_type="live",
            tc_url="rtmp://example/live",
        )
    ]


def test_bytes_after_publish_wait_until_the_publish_is_decided():
    conn = connected()
    conn.receive_data(message_chunks(3, 20, command("createStream", 2.0)))
    events = conn.receive_data(
        message_chunks(4, 20, command("publish", 3.0, None, "key", "live"), stream_id=1)
        + message_chunks(6, 9, AVC_HEADER, stream_id=1)
    )
    assert [type(e) for e in events] == [PublishRequested]
    assert conn.awaiting_publish_decision and conn.buffered_bytes > 0
    assert conn.receive_data(message_chunks(4, 8, AAC_HEADER, stream_id=1)) == []
    conn.accept_publish()
    assert conn.receive_data(b"") == [VideoMessage(0, AVC_HEADER), AudioMessage(0, AAC_HEADER)]


def test_accept_publish_sends_stream_begin_and_publish_start_on_the_stream():
    conn, _ = publishing()
    output = server_output(conn)
    assert output.messages[-2].type_id == 4
    assert output.messages[-2].payload == b"\x00\x00\x00\x00\x00\x01"
    stream_id, values = output.commands()[-1]
    assert stream_id == 1
    assert values[0] == "onStatus"
    assert values[3]["level"] == "status"
    assert values[3]["code"] == "NetStream.Publish.Start"


def test_wrong_key_is_refused_with_badname_and_the_connection_closes():
    conn, _ = publishing(accept=False)
    conn.reject_publish("unknown stream key")
    stream_id, values = server_output(conn).commands()[-1]
    assert (stream_id, values[0]) == (1, "onStatus")
    assert values[3] == {
        "level": "error",
        "code": "NetStream.Publish.BadName",
        "description": "unknown stream key",
    }
    assert conn.closed
    assert conn.receive_data(message_chunks(6, 9, AVC_HEADER, stream_id=1)) == []
    assert conn.receive_eof() == []


def test_media_before_publish_is_dropped():
    conn = connected()
    assert conn.receive_data(message_chunks(6, 9, AVC_HEADER, stream_id=1)) == []


def test_media_and_metadata_after_accept_become_events_with_absolute_timestamps():
    conn, _ = publishing()
    metadata = amf0.encode_values(
        "@setDataFrame", "onMetaData", amf0.EcmaArray(width=320.0, height=240.0)
    )
    events = conn.receive_data(
        message_chunks(4, 18, metadata, stream_id=1)
        + message_chunks(6, 9, AVC_HEADER, timestamp=0, stream_id=1)
        + chunk(1, 6, b"\x27\x01", timestamp=40, length=2, type_id=9)
        + message_chunks(7, 8, AAC_HEADER, timestamp=0xFFFFFF + 5, stream_id=1)
    )
    assert events == [
        StreamMetadata({"width": 320.0, "height": 240.0}),
        VideoMessage(0, AVC_HEADER),
        VideoMessage(40, b"\x27\x01"),
        AudioMessage(0xFFFFFF + 5, AAC_HEADER),
    ]


def test_amf3_data_and_command_messages_carrying_amf0_are_understood():
    conn = connected()
    conn.receive_data(message_chunks(3, 17, b"\x00" + command("createStream", 2.0)))
    conn.receive_data(
        message_chunks(4, 17, b"\x00" + command("publish", 3.0, None, "k"), stream_id=1)
    )
    conn.accept_publish()
    events = conn.receive_data(
        message_chunks(
            4, 15, b"\x00" + amf0.encode_values("onMetaData", {"width": 640.0}), stream_id=1
        )
    )
    assert events == [StreamMetadata({"width": 640.0})]


def test_unpublish_commands_end_the_publish_once():
    conn, _ = publishing()
    events = conn.receive_data(
        message_chunks(3, 20, command("FCUnpublish", 5.0, None, "somekey"))
        + message_chunks(3, 20, command("deleteStream", 6.0, None, 1.0))
        + message_chunks(3, 20, command("closeStream", 7.0))
    )
    assert events == [PublishEnded("FCUnpublish")]
    assert conn.receive_eof() == []


def test_eof_during_a_publish_ends_it():
    conn, _ = publishing()
    assert conn.receive_eof() == [PublishEnded("connection closed")]
    assert conn.closed


def test_server_close_sends_unpublish_and_ends_the_publish():
    conn, _ = publishing()
    conn.data_to_send()
    assert conn.close("kicked") == [PublishEnded("closed by server")]
    ((_, values),) = server_output(conn).commands()
    assert values[3]["code"] == "NetStream.Unpublish.Success"
    assert conn.closed and conn.close() == []


def test_an_acknowledgement_is_sent_each_time_received_bytes_pass_the_peer_window():
    conn = connected()
    conn.data_to_send()

    def acks() -> list[int]:
        output = server_output(conn)
        return [struct.unpack(">I", m.payload)[0] for m in output.messages if m.type_id == 3]

    # The handshake and connect already exceed the window: acknowledged at once.
    conn.receive_data(chunk(0, 2, struct.pack(">I", 1000), length=4, type_id=5))
    assert acks() == [conn.bytes_received]
    conn.receive_data(message_chunks(3, 20, command("unknownCall", 0.0, None, "x" * 800)))
    assert acks() == []
    conn.receive_data(message_chunks(3, 20, command("unknownCall", 0.0, None, "x" * 200)))
    assert acks() == [conn.bytes_received]


def test_ping_requests_get_ping_responses_with_the_same_timestamp():
    conn = connected()
    conn.data_to_send()
    conn.receive_data(chunk(0, 2, b"\x00\x06\x00\x00\x12\x34", length=6, type_id=4))
    (message,) = server_output(conn).messages
    assert (message.type_id, message.payload) == (4, b"\x00\x07\x00\x00\x12\x34")


def test_set_peer_bandwidth_with_a_new_window_is_answered_with_window_ack_size():
    conn = connected()
    conn.data_to_send()
    conn.receive_data(chunk(0, 2, struct.pack(">IB", 2_500_000, 2), length=5, type_id=6))
    (message,) = server_output(conn).messages
    assert (message.type_id, struct.unpack(">I", message.payload)[0]) == (5, 2_500_000)


def test_unknown_commands_are_ignored_and_commands_before_connect_are_refused():
    conn = connected()
    conn.data_to_send()
    assert conn.receive_data(message_chunks(3, 20, command("getStreamLength", 9.0))) == []
    assert conn.data_to_send() == b""
    fresh = ServerConnection()
    fresh.receive_data(plain_c0c1() + b"\x00" * HANDSHAKE_SIZE)
    with pytest.raises(CommandError):
        fresh.receive_data(message_chunks(3, 20, command("publish", 1.0, None, "k")))
    assert fresh.closed


def test_play_is_refused_because_this_server_only_ingests():
    conn = connected()
    conn.data_to_send()
    conn.receive_data(message_chunks(8, 20, command("play", 4.0, None, "k"), stream_id=1))
    ((_, values),) = server_output(conn).commands()
    assert values[3]["code"] == "NetStream.Play.StreamNotFound"
    assert conn.closed


def test_accept_without_a_publish_request_is_a_state_error():
    with pytest.raises(StateError):
        connected().accept_publish()


def test_a_second_publish_on_the_connection_is_refused_without_a_new_event():
    conn, _ = publishing()
    conn.data_to_send()
    events = conn.receive_data(
        message_chunks(4, 20, command("publish", 5.0, None, "other"), stream_id=1)
    )
    assert events == []
    ((_, values),) = server_output(conn).commands()
    assert values[3]["code"] == "NetStream.Publish.BadConnection"


def test_aggregate_messages_are_split_into_their_tags_with_offset_timestamps():
    conn, _ = publishing()

    def tag(type_id: int, stamp: int, body: bytes) -> bytes:
        header = bytes([type_id]) + len(body).to_bytes(3, "big") + stamp.to_bytes(3, "big")
        return header + b"\x00" + b"\x00\x00\x00" + body + (11 + len(body)).to_bytes(4, "big")

    aggregate = tag(9, 1000, AVC_HEADER) + tag(8, 1020, AAC_HEADER)
    events = conn.receive_data(message_chunks(6, 22, aggregate, timestamp=5000, stream_id=1))
    assert events == [VideoMessage(5000, AVC_HEADER), AudioMessage(5020, AAC_HEADER)]


def test_metadata_keeps_only_finite_numbers_and_short_strings():
    conn, _ = publishing()
    metadata = amf0.encode_values(
        "onMetaData",
        amf0.EcmaArray(
            width=640.0,
            fps=float("nan"),
            rate=float("inf"),
            encoder="x" * 256,
            title="y" * 257,
            nested={"a": 1.0},
        ),
    )
    events = conn.receive_data(message_chunks(4, 18, metadata, stream_id=1))
    # Only the two safe entries survive; NaN, infinity, the 257-char string and the nested
    # object are gone, so nothing downstream sees them.
    assert events == [StreamMetadata({"width": 640.0, "encoder": "x" * 256})]


def _header_only(type_id: int, length: int) -> bytes:
    """The first chunk's header of a message of `length` bytes, without its payload: the
    limit must bite before the payload is held."""
    return chunk(0, 3, b"", length=length, type_id=type_id)


@pytest.mark.parametrize("type_id", [20, 17, 18, 15])
def test_a_command_or_data_message_over_64_kib_before_publish_closes_the_connection(type_id):
    conn = connected()
    with pytest.raises(LimitExceededError) as caught:
        conn.receive_data(_header_only(type_id, 64 * 1024 + 1))
    assert caught.value.value == 64 * 1024 + 1
    assert "at most 65536 bytes before a publish is accepted" in str(caught.value)
    assert conn.closed


def test_a_command_of_64_kib_before_publish_is_still_read():
    conn = connected()
    big = command("releaseStream", 2.0, None, "k" * (64 * 1024 - 40))
    assert len(big) <= 64 * 1024
    conn.receive_data(message_chunks(3, 20, big))
    assert not conn.closed


def test_after_the_publish_is_accepted_data_messages_may_be_larger_again():
    conn, _ = publishing()
    values = {"width": 1280.0, "pad": "x" * 100_000}
    big = amf0.encode_values("@setDataFrame", "onMetaData", values)
    assert len(big) > 64 * 1024
    events = conn.receive_data(message_chunks(4, 18, big, stream_id=1))
    assert events == [StreamMetadata({"width": 1280.0})]
    assert not conn.closed


def test_the_pre_publish_limit_never_exceeds_the_message_limit():
    conn = connected(ServerConnection(max_message_size=2048))
    with pytest.raises(LimitExceededError):
        conn.receive_data(_header_only(20, 4096))
