import struct

import pytest

from ingest.rtmp import ChunkStreamError, LimitExceededError, ServerConnection
from ingest.rtmp.chunks import ChunkReader, ChunkWriter
from tests.fixtures.rtmp.client_bytes import chunk, message_chunks, publishing


def read(*pieces: bytes, reader: ChunkReader | None = None) -> list:
    reader = reader or ChunkReader()
    reader.buffer += b"".join(pieces)
    return reader.read_messages()


def test_all_four_header_types_carry_timestamps_deltas_and_lengths():
    messages = read(
        chunk(0, 4, b"aaaa", timestamp=1000, length=4, type_id=8, stream_id=1),
        chunk(1, 4, b"bbbbbb", timestamp=20, length=6, type_id=9),  # new length and type
        chunk(2, 4, b"cccccc", timestamp=30),  # delta only
        chunk(3, 4, b"dddddd"),  # repeats delta 30
    )
    assert [(m.type_id, m.stream_id, m.timestamp, m.payload) for m in messages] == [
        (8, 1, 1000, b"aaaa"),
        (9, 1, 1020, b"bbbbbb"),
        (9, 1, 1050, b"cccccc"),
        (9, 1, 1080, b"dddddd"),
    ]


def test_a_type_3_after_a_type_0_uses_the_type_0_timestamp_as_its_delta():
    messages = read(chunk(0, 4, b"a", timestamp=40, length=1, type_id=8), chunk(3, 4, b"b"))
    assert [m.timestamp for m in messages] == [40, 80]


@pytest.mark.parametrize("csid", [2, 63, 64, 319, 320, 65599])
def test_one_two_and_three_byte_basic_headers_give_the_chunk_stream_id(csid):
    (message,) = read(message_chunks(csid, 8, b"x" * 300))
    assert message.chunk_stream_id == csid
    assert message.payload == b"x" * 300


def test_messages_on_interleaved_chunk_streams_are_reassembled_separately():
    audio = bytes(range(200))
    video = bytes(range(256)) + bytes(range(128))
    messages = read(
        chunk(0, 4, audio[:128], timestamp=5, length=len(audio), type_id=8, stream_id=1),
        chunk(0, 6, video[:128], timestamp=7, length=len(video), type_id=9, stream_id=1),
        chunk(3, 6, video[128:256]),
        chunk(3, 4, audio[128:]),
        chunk(3, 6, video[256:]),
    )
    assert [(m.type_id, m.timestamp, m.payload) for m in messages] == [(8, 5, audio), (9, 7, video)]


def test_extended_timestamp_on_type_0_repeated_on_continuations_as_ffmpeg_sends_it():
    stamp = 0x01234567
    payload = b"v" * 300
    messages = read(
        chunk(0, 6, payload[:128], length=300, type_id=9, extended=stamp),
        chunk(3, 6, payload[128:256], extended=stamp),
        chunk(3, 6, payload[256:], extended=stamp),
    )
    assert [(m.timestamp, m.payload) for m in messages] == [(stamp, payload)]


def test_extended_timestamp_not_repeated_on_continuations_is_also_understood():
    stamp = 0x01234567
    payload = b"w" * 300
    messages = read(
        chunk(0, 6, payload[:128], length=300, type_id=9, extended=stamp),
        chunk(3, 6, payload[128:256]),
        chunk(3, 6, payload[256:]),
    )
    assert [(m.timestamp, m.payload) for m in messages] == [(stamp, payload)]


def test_extended_deltas_on_type_1_and_on_a_new_type_3_message_are_applied():
    messages = read(
        chunk(0, 4, b"a", timestamp=10, length=1, type_id=8),
        chunk(1, 4, b"b", length=1, type_id=8, extended=0x1000000),
        chunk(3, 4, b"c", extended=0x2000000),  # a new message: the extended field is its delta
    )
    assert [m.timestamp for m in messages] == [10, 10 + 0x1000000, 10 + 0x3000000]


def test_timestamps_wrap_at_32_bits():
    messages = read(
        chunk(0, 4, b"a", length=1, type_id=8, extended=0xFFFFFFF0),
        chunk(2, 4, b"b", timestamp=0x20),
    )
    assert [m.timestamp for m in messages] == [0xFFFFFFF0, 0x10]


def test_set_chunk_size_mid_stream_changes_how_later_chunks_are_cut():
    payload = bytes(range(256)) * 4
    messages = read(
        message_chunks(3, 9, b"before" * 50),
        chunk(0, 2, struct.pack(">I", 512), length=4, type_id=1),
        message_chunks(6, 9, payload, chunk_size=512),
    )
    assert [m.type_id for m in messages] == [9, 1, 9]
    assert messages[0].payload == b"before" * 50
    assert messages[2].payload == payload


def test_abort_discards_the_partial_message_on_that_chunk_stream():
    reader = ChunkReader()
    messages = read(
        chunk(0, 6, b"x" * 128, length=300, type_id=9),
        chunk(0, 2, struct.pack(">I", 6), length=4, type_id=2),
        chunk(0, 6, b"fresh", length=5, type_id=9),
        reader=reader,
    )
    assert [(m.type_id, m.payload) for m in messages] == [(2, b"\x00\x00\x00\x06"), (9, b"fresh")]


def test_a_chunk_split_across_reads_is_kept_until_it_is_complete():
    reader = ChunkReader()
    data = message_chunks(4, 8, b"z" * 200, timestamp=3)
    for byte in data[:-1]:
        assert read(bytes([byte]), reader=reader) == []
    (message,) = read(data[-1:], reader=reader)
    assert message.payload == b"z" * 200 and message.timestamp == 3
    assert len(reader.buffer) == 0


def test_a_header_of_type_1_2_or_3_on_an_unknown_chunk_stream_is_an_error():
    for fmt in (1, 2, 3):
        with pytest.raises(ChunkStreamError) as info:
            read(chunk(fmt, 9, b"", length=0, type_id=8))
        assert info.value.value == 9


def test_a_new_message_header_before_the_previous_message_finished_is_an_error():
    with pytest.raises(ChunkStreamError):
        read(chunk(0, 6, b"x" * 128, length=300, type_id=9), chunk(0, 6, b"y", length=1, type_id=9))


@pytest.mark.parametrize("value", [0, 0x80000000])
def test_invalid_chunk_sizes_are_refused(value):
    with pytest.raises(ChunkStreamError):
        read(chunk(0, 2, struct.pack(">I", value), length=4, type_id=1))


def test_limits_on_chunk_size_message_size_chunk_streams_and_pending_bytes_hold():
    with pytest.raises(LimitExceededError):
        read(
            chunk(0, 2, struct.pack(">I", 70000), length=4, type_id=1),
            reader=ChunkReader(max_chunk_size=65536),
        )
    with pytest.raises(LimitExceededError) as info:
        read(chunk(0, 6, b"", length=2000, type_id=9), reader=ChunkReader(max_message_size=1000))
    assert info.value.value == 2000
    with pytest.raises(LimitExceededError):
        read(
            *(chunk(0, csid, b"", length=0, type_id=8) for csid in range(2, 10)),
            reader=ChunkReader(max_chunk_streams=4),
        )
    with pytest.raises(LimitExceededError):
        read(
            *(chunk(0, csid, b"x" * 128, length=1000, type_id=9) for csid in range(2, 10)),
            reader=ChunkReader(max_pending_bytes=3000),
        )


def test_the_receive_buffer_limit_holds_while_a_publish_waits_for_a_decision():
    conn, _ = publishing(accept=False)
    with pytest.raises(LimitExceededError):
        for _ in range(200):
            conn.receive_data(b"\x00" * 8192)
    assert conn.closed
    assert conn.buffered_bytes == 0


def test_writer_output_is_read_back_identically_at_any_chunk_size():
    writer = ChunkWriter()
    for chunk_size in (1, 7, 128, 4096):
        writer.chunk_size = chunk_size
        reader = ChunkReader()
        reader.chunk_size = chunk_size
        sent = [
            (csid, type_id, bytes([csid % 256]) * size, stamp)
            for csid, type_id, size, stamp in [
                (2, 8, 0, 0),
                (3, 9, 1, 5),
                (64, 20, 500, 0xFFFFFF),
                (400, 18, 129, 0xFFFFFFFF),
                (65599, 9, 9000, 12345),
            ]
        ]
        wire = b"".join(
            writer.write(csid, t, p, timestamp=s, stream_id=7) for csid, t, p, s in sent
        )
        got = read(wire, reader=reader)
        assert [
            (m.chunk_stream_id, m.type_id, m.payload, m.timestamp, m.stream_id) for m in got
        ] == [(c, t, p, s, 7) for c, t, p, s in sent]


def test_the_server_refuses_construction_with_a_buffer_smaller_than_a_chunk():
    with pytest.raises(ValueError):
        ServerConnection(max_chunk_size=65536, max_receive_buffer=10000)
